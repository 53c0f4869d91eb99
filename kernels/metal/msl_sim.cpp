// The grid runner of the MSL-on-CPU harness: threads of a threadgroup as fibers, barriers and
// simd ops as meeting points (see msl_sim.h).
#include <setjmp.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/metal/msl_sim.h"

extern "C" {
#include "kernels/backend.h"
}

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define SIM_ASAN 1
#else
#define SIM_ASAN 0
#endif

// Switching: swapcontext saves and restores the signal mask, a system call per switch. Where
// we can, a fiber is started with makecontext/setcontext once and then switched with
// _setjmp/_longjmp, which save registers only. Not under ASan (it follows stacks through the
// swapcontext interceptor and the annotations below) nor with _FORTIFY_SOURCE (its longjmp
// check rejects a jump to another stack).
#if SIM_ASAN || (defined(_FORTIFY_SOURCE) && _FORTIFY_SOURCE > 0)
#define SIM_JMP 0
#else
#define SIM_JMP 1
#endif

float msl_f16_to_f32(uint16_t h) { return bk_f16_to_f32(h); }
uint16_t msl_f32_to_f16(float f) { return bk_f32_to_f16(f); }

namespace {

// Kernel frames are small (a few arrays of 32 floats). ASan clears the shadow of the whole
// target stack on every swapcontext, so a bigger stack costs time on every switch there.
const size_t kStack = SIM_ASAN ? 96 * 1024 : 64 * 1024;
const unsigned kMaxThreads = 1024;
const unsigned kSlotBytes = 16; // widest value a simd op exchanges (float4)

enum state { READY, WAIT_TG, WAIT_SIMD, DONE };

struct fiber {
    ucontext_t ctx;
    char *stack = nullptr;
    state st = READY;
    unsigned t_idx = 0;
    unsigned simd_ops = 0; // simd ops this lane has entered: all lanes must agree
    void *fake_stack = nullptr;
    bool started = false;
    jmp_buf jb;
};

struct simd_group {
    unsigned char slot[2][32][kSlotBytes]; // double-buffered by op parity
    unsigned active = 0;                   // lanes that took part in the last completed op
};

struct tg_run {
    ucontext_t sched;
    jmp_buf sched_jb;
    std::vector<fiber> fibers;
    std::vector<simd_group> sgs;
    const std::function<void(const msl_thread_ids &)> *body = nullptr;
    uint3 tg_pos;
    fiber *cur = nullptr;
    const void *sched_stack_bottom = nullptr;
    size_t sched_stack_size = 0;
};

thread_local tg_run *g_run = nullptr;
// fiber stacks, reused across threadgroups and runs, freed when the OS thread ends
struct stack_pool {
    std::vector<char *> stacks;
    ~stack_pool() {
        for (char *s : stacks) std::free(s);
    }
};
thread_local stack_pool g_stacks;

// ---- switching, with the annotations ASan needs to follow stacks ----

#if SIM_JMP
void to_fiber(tg_run *r, fiber *f) {
    r->cur = f;
    if (!_setjmp(r->sched_jb)) {
        if (f->started) _longjmp(f->jb, 1);
        f->started = true;
        setcontext(&f->ctx);
    }
    r->cur = nullptr;
}

__attribute__((noinline)) void to_scheduler(tg_run *r, fiber *f, bool exiting) {
    if (exiting) _longjmp(r->sched_jb, 1);
    if (!_setjmp(f->jb)) _longjmp(r->sched_jb, 1);
}
#else
void to_fiber(tg_run *r, fiber *f) {
    r->cur = f;
    void *fake = nullptr;
#if SIM_ASAN
    __sanitizer_start_switch_fiber(&fake, f->stack, kStack);
#endif
    swapcontext(&r->sched, &f->ctx);
#if SIM_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    (void)fake;
    r->cur = nullptr;
}

void to_scheduler(tg_run *r, fiber *f, bool exiting) {
#if SIM_ASAN
    __sanitizer_start_switch_fiber(exiting ? nullptr : &f->fake_stack, r->sched_stack_bottom, r->sched_stack_size);
#endif
    (void)exiting;
    swapcontext(&f->ctx, &r->sched);
#if SIM_ASAN
    __sanitizer_finish_switch_fiber(f->fake_stack, &r->sched_stack_bottom, &r->sched_stack_size);
#endif
}
#endif

void fiber_entry() {
    tg_run *r = g_run;
    fiber *f = r->cur;
#if SIM_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &r->sched_stack_bottom, &r->sched_stack_size);
#endif
    msl_thread_ids ids;
    ids.tg_pos = r->tg_pos;
    ids.t_idx = f->t_idx;
    ids.simd_lane = f->t_idx % 32;
    ids.simd_id = f->t_idx / 32;
    (*r->body)(ids);
    f->st = DONE;
    to_scheduler(r, f, true);
    std::abort(); // a finished fiber is never resumed
}

fiber *current() {
    if (!g_run || !g_run->cur) {
        std::fprintf(stderr, "msl shim: barrier or simd op in a kernel run without fibers "
                             "(listed as meeting-free in metal_sim.cpp?)\n");
        std::abort();
    }
    return g_run->cur;
}

// One threadgroup to completion. Returns 0 or -1 with *error set.
int run_group(tg_run *r, unsigned threads, const char *name, std::string *error) {
    for (unsigned i = 0; i < threads; i++) {
        fiber &f = r->fibers[i];
        f.st = READY;
        f.t_idx = i;
        f.simd_ops = 0;
        f.fake_stack = nullptr;
        f.started = false;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_entry, 0);
    }
    unsigned n_sg = threads / 32;
    for (;;) {
        bool ran = false;
        for (unsigned i = 0; i < threads; i++)
            if (r->fibers[i].st == READY) {
                to_fiber(r, &r->fibers[i]);
                ran = true;
            }
        if (ran) continue;

        // everyone is waiting or done: complete the simd ops whose simdgroup is all there
        bool released = false;
        for (unsigned s = 0; s < n_sg; s++) {
            unsigned waiting = 0, live = 0, ops = 0;
            bool same_op = true, first = true;
            for (unsigned l = 0; l < 32; l++) {
                fiber &f = r->fibers[s * 32 + l];
                if (f.st == DONE) continue;
                live++;
                if (f.st != WAIT_SIMD) continue;
                waiting |= 1u << l;
                if (first) { ops = f.simd_ops; first = false; }
                else if (f.simd_ops != ops) same_op = false;
            }
            if (!waiting || __builtin_popcount(waiting) != (int)live) continue;
            if (!same_op) {
                *error = std::string(name) + ": lanes of simdgroup " + std::to_string(s) +
                         " met at different simd ops (divergent control flow)";
                return -1;
            }
            r->sgs[s].active = waiting;
            for (unsigned l = 0; l < 32; l++)
                if (waiting >> l & 1) r->fibers[s * 32 + l].st = READY;
            released = true;
        }
        if (released) continue;

        unsigned done = 0, at_tg = 0;
        for (unsigned i = 0; i < threads; i++) {
            done += r->fibers[i].st == DONE;
            at_tg += r->fibers[i].st == WAIT_TG;
        }
        if (done == threads) return 0;
        if (at_tg == threads) {
            for (unsigned i = 0; i < threads; i++) r->fibers[i].st = READY;
            continue;
        }
        *error = std::string(name) + ": threadgroup stuck: " + std::to_string(done) + " threads returned, " +
                 std::to_string(at_tg) + " wait at a threadgroup barrier, " +
                 std::to_string(threads - done - at_tg) +
                 " at simd ops (a barrier not reached by every thread, or a simd op split across a barrier)";
        return -1;
    }
}

} // namespace

void msl_sim_threadgroup_barrier() {
    fiber *f = current();
    f->st = WAIT_TG;
    to_scheduler(g_run, f, false);
}

void msl_sim_simd_exchange(const void *in, unsigned size, void *all, unsigned *active) {
    fiber *f = current();
    tg_run *r = g_run;
    if (size > kSlotBytes) {
        std::fprintf(stderr, "msl shim: simd op on a %u-byte value\n", size);
        std::abort();
    }
    simd_group &sg = r->sgs[f->t_idx / 32];
    unsigned parity = f->simd_ops & 1, lane = f->t_idx % 32;
    std::memcpy(sg.slot[parity][lane], in, size);
    f->simd_ops++;
    f->st = WAIT_SIMD;
    to_scheduler(r, f, false);
    // every lane of this op has written; none can write this parity again before we all
    // pass the next op, which needs us there first
    for (unsigned l = 0; l < 32; l++) std::memcpy((char *)all + l * size, sg.slot[parity][l], size);
    *active = sg.active;
}

unsigned msl_sim_lane() { return current()->t_idx % 32; }

int msl_sim_run(const char *name, uint3 groups, unsigned threads, bool meets,
                const std::function<void(const msl_thread_ids &)> &body, std::string *error) {
    if (threads == 0 || threads % 32 || threads > kMaxThreads) {
        *error = std::string(name) + ": threadgroup of " + std::to_string(threads) + " threads (want a multiple of 32, at most 1024)";
        return -1;
    }
    if (g_run) {
        *error = std::string(name) + ": nested kernel run";
        return -1;
    }
    if (!meets) {
        // no barrier, no simd op: threads cannot observe each other, run them one after another
        // (a hook called anyway finds no fiber and stops the program with the kernel's name)
        msl_thread_ids ids;
        for (unsigned z = 0; z < groups.z; z++)
            for (unsigned y = 0; y < groups.y; y++)
                for (unsigned x = 0; x < groups.x; x++)
                    for (unsigned i = 0; i < threads; i++) {
                        ids.tg_pos = uint3(x, y, z);
                        ids.t_idx = i;
                        ids.simd_lane = i % 32;
                        ids.simd_id = i / 32;
                        body(ids);
                    }
        return 0;
    }
    while (g_stacks.stacks.size() < threads) {
        char *s = static_cast<char *>(std::malloc(kStack));
        if (!s) { *error = "out of memory for fiber stacks"; return -1; }
        g_stacks.stacks.push_back(s);
    }
    tg_run r;
    r.fibers.resize(threads);
    r.sgs.resize(threads / 32);
    for (unsigned i = 0; i < threads; i++) r.fibers[i].stack = g_stacks.stacks[i];
    r.body = &body;
    g_run = &r;
    int rc = 0;
    for (unsigned z = 0; z < groups.z && !rc; z++)
        for (unsigned y = 0; y < groups.y && !rc; y++)
            for (unsigned x = 0; x < groups.x && !rc; x++) {
                r.tg_pos = uint3(x, y, z);
                rc = run_group(&r, threads, name, error);
            }
    g_run = nullptr;
    return rc;
}
