/* libFuzzer target: the wire frame decoder (wire_decode), a pure function over byte ranges.
 * Input layout: byte 0 bit 0 = a frame 2 is present; bytes 1-2 = length of frame 1 (little
 * endian, clipped to what is left); then frame 1; the rest is frame 2. A decoded message's body
 * is then touched field by field the way the worker and master read it. */
#include <string.h>

#include "common/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int has_payload = data[0] & 1;
    size_t ctrl_bytes = (size_t)data[1] | (size_t)data[2] << 8;
    data += 3, size -= 3;
    if (ctrl_bytes > size) ctrl_bytes = size;
    wire_msg m;
    strata_err err = {{0}};
    wire_status st = wire_decode(data, ctrl_bytes, has_payload, data + ctrl_bytes, size - ctrl_bytes, &m, &err);
    if (st == WIRE_OK) {
        const Strata__Envelope *e = m.env;
        volatile size_t sink = strlen(wire_body_name(e->body_case));
        if (e->body_case == STRATA__ENVELOPE__BODY_FORWARD || e->body_case == STRATA__ENVELOPE__BODY_RESULT) {
            /* the decoder promised frame 2 is exactly n x hidden x dtype bytes */
            const Strata__Forward *f = e->forward;
            uint32_t n = f ? f->n_tokens : e->result->n_tokens, h = f ? f->hidden_dim : e->result->hidden_dim;
            int dt = f ? f->dtype : e->result->dtype;
            if ((size_t)n * h * wire_dtype_size(dt) != m.payload_bytes) __builtin_trap();
            sink += m.payload[m.payload_bytes - 1];
        }
        if (e->body_case == STRATA__ENVELOPE__BODY_ASSIGN) sink += strlen(e->assign->config_json) + e->assign->bundle_sha256.data[31];
        if (e->body_case == STRATA__ENVELOPE__BODY_CHUNK) sink += m.payload[m.payload_bytes - 1];
        (void)sink;
    } else if (m.env) {
        __builtin_trap(); /* a refused message owns nothing */
    }
    wire_msg_free(&m);
    return 0;
}
