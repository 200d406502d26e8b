/* A C program using a model compiled ahead of time by `kiln build` (see README.md):
 * predicts a digit, runs a few training steps on it, saves the weights, and times
 * prediction. Nothing but the object file and libm is linked. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "digits_mlp.h"

/* An 8x8 image of a "1" (pixel values 0..16, as in the digits data set). */
static const float ONE[64] = {
    0, 0, 0, 12, 13, 0, 0, 0,
    0, 0, 0, 14, 16, 0, 0, 0,
    0, 0, 6, 16, 16, 0, 0, 0,
    0, 0, 0, 16, 16, 0, 0, 0,
    0, 0, 0, 16, 16, 0, 0, 0,
    0, 0, 0, 16, 16, 0, 0, 0,
    0, 0, 0, 16, 16, 0, 0, 0,
    0, 0, 0, 11, 16, 9, 0, 0,
};

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 5;
    int reps = argc > 2 ? atoi(argv[2]) : 20000;
    float image[digits_mlp_INPUT_IMAGE_SIZE], logits[digits_mlp_OUTPUT_LOGITS_SIZE];
    for (int i = 0; i < digits_mlp_INPUT_IMAGE_SIZE; i++) image[i] = ONE[i];

    if (digits_mlp_predict(image, logits) != 0) return 1;
    printf("predicted class: %d\n", argmax(logits, digits_mlp_OUTPUT_LOGITS_SIZE));

    /* A few training steps on this one example, label 1 (class ids as floats). */
    float label[digits_mlp_TARGET_LABEL_SIZE] = {1.0f}, loss = 0.0f;
    for (int s = 0; s < steps; s++) {
        if (digits_mlp_train_step(image, label, &loss) != 0) return 1;
        printf("step %llu: loss %.4g\n", (unsigned long long)digits_mlp_step, loss);
    }
    if (digits_mlp_predict(image, logits) != 0) return 1;
    printf("after training: predicted class %d\n", argmax(logits, digits_mlp_OUTPUT_LOGITS_SIZE));

    /* Save the trained weights as raw float32 (the header gives each key's offset). */
    static float w[digits_mlp_WEIGHTS_SIZE];
    digits_mlp_get_weights(w);
    FILE *f = fopen("weights.f32", "wb");
    if (!f || fwrite(w, sizeof(float), digits_mlp_WEIGHTS_SIZE, f) != digits_mlp_WEIGHTS_SIZE) return 1;
    fclose(f);
    printf("wrote weights.f32 (%d floats)\n", digits_mlp_WEIGHTS_SIZE);

    /* Latency of one prediction (batch 1): the median over `reps` timings of 10 calls
     * each (short timings, so that a busy machine's preemptions stay in the tail). */
    double *runs = malloc(sizeof(double) * (reps > 0 ? reps : 1));
    if (!runs) return 1;
    for (int r = 0; r < reps; r++) {
        double t0 = now_us();
        for (int i = 0; i < 10; i++) digits_mlp_predict(image, logits);
        runs[r] = (now_us() - t0) / 10;
    }
    qsort(runs, reps, sizeof(double), by_value);
    if (reps > 0) printf("predict latency: %.3f us (median of %d x 10 calls)\n", runs[reps / 2], reps);
    free(runs);
    return 0;
}
