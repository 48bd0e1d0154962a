/* SGD with momentum and weight decay, in torch.optim.SGD's order of operations. */
#include "internal.h"

void tcl_sgd_update(int32_t n, float *w, const float *g, float *v, float lr, float momentum, float weight_decay) {
    for (int32_t i = 0; i < n; ++i) {
        float d = g[i];
        if (weight_decay != 0.0f) d += weight_decay * w[i];
        if (v) {
            v[i] = momentum * v[i] + d;
            d = v[i];
        }
        w[i] -= lr * d;
    }
}
