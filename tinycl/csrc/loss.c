/* Softmax cross-entropy of one sample, shifted by the maximum logit so that expf never overflows; tcl_expf and
 * tcl_logf (mathf.c), not the C library's, so that host and device agree bit for bit. */
#include "internal.h"

float tcl_softmax_xent(int32_t n, const float *z, int32_t label, float scale, float *dz) {
    float zmax = z[0];
    for (int32_t i = 1; i < n; ++i) zmax = z[i] > zmax ? z[i] : zmax;
    float sum = 0.0f;
    for (int32_t i = 0; i < n; ++i) {
        dz[i] = tcl_expf(z[i] - zmax);
        sum += dz[i];
    }
    const float inv = scale / sum;
    for (int32_t i = 0; i < n; ++i) dz[i] *= inv;
    dz[label] -= scale;
    return tcl_logf(sum) - (z[label] - zmax);
}
