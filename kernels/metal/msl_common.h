/* Helpers every strata .metal file shares (MSL, also compiled as C++ by the harness). The
 * embedded library gets this file pasted in place of its #include. */
#ifndef STRATA_MSL_COMMON_H
#define STRATA_MSL_COMMON_H

/* Stored float dtypes as template tags: T is the storage type, get() widens to f32. bf16 is
 * read as ushort and shifted, so the library needs no bfloat support (Metal 3.1+). */
struct ld_f32 {
    typedef float T;
    static inline float get(T v) { return v; }
};
struct ld_f16 {
    typedef half T;
    static inline float get(T v) { return float(v); }
};
struct ld_bf16 {
    typedef ushort T;
    static inline float get(T v) { return as_type<float>(uint(v) << 16); }
};

/* value i of a small float vector whose dtype is only known at run time (norm weight, output
 * bias): a uniform branch, taken once per element, never in a weight-streaming loop */
inline float load_float(device const uchar *p, int dtype, int i) {
    if (dtype == MSL_F32) return ((device const float *)p)[i];
    ushort h = ((device const ushort *)p)[i];
    return dtype == MSL_F16 ? float(as_type<half>(h)) : as_type<float>(uint(h) << 16);
}

#endif
