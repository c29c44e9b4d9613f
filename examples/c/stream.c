/*
 * recur from C: load a model out of a larger PyTorch state_dict, run a forward pass, then feed
 * the same sequence through a streaming session in uneven chunks and check that the numbers
 * are the same, bit for bit.
 *
 *   cc examples/c/stream.c -Iinclude -L<target>/release -lrecur_capi -o stream
 *   ./stream assets/demo/model.safetensors lstm.
 *
 * capi/tests/c_example.rs builds and runs this program in the default test run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur.h"

#define SEQ_LEN 50
#define BATCH 2

static const char *mode_name(int mode) {
    switch (mode) {
    case RECUR_MODE_RNN_TANH: return "RNN_TANH";
    case RECUR_MODE_RNN_RELU: return "RNN_RELU";
    case RECUR_MODE_LSTM: return "LSTM";
    case RECUR_MODE_GRU: return "GRU";
    default: return "?";
    }
}

static int fail(const char *what) {
    fprintf(stderr, "%s failed: %s\n", what, recur_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.safetensors [PREFIX]\n", argv[0]);
        return 2;
    }
    printf("recur %s\n", recur_version());

    /* A failure is a NULL handle (or -1) and a message, never a crash. */
    if (recur_model_load("no/such/model.safetensors", NULL) == NULL) {
        printf("expected error: %s\n", recur_last_error());
    }

    RecurModel *model = recur_model_load(argv[1], argc > 2 ? argv[2] : NULL);
    if (model == NULL) return fail("recur_model_load");
    RecurConfig cfg;
    if (recur_model_config(model, &cfg) != 0) return fail("recur_model_config");
    printf("config: mode=%s input_size=%zu hidden_size=%zu num_layers=%zu proj_size=%zu "
           "bidirectional=%d batch_first=%d\n",
           mode_name(cfg.mode), cfg.input_size, cfg.hidden_size, cfg.num_layers, cfg.proj_size,
           (int)cfg.bidirectional, (int)cfg.batch_first);
    printf("isa: %s\n", recur_model_isa(model));

    const size_t in = cfg.input_size, w = cfg.directions * cfg.output_hidden;
    const size_t states = cfg.directions * cfg.num_layers;
    const size_t h_len = states * BATCH * cfg.output_hidden;
    const size_t c_len = cfg.mode == RECUR_MODE_LSTM ? states * BATCH * cfg.hidden_size : 0;
    const size_t x_len = SEQ_LEN * BATCH * in, y_len = SEQ_LEN * BATCH * w;
    float *x = malloc(x_len * sizeof *x), *y = malloc(y_len * sizeof *y);
    float *y_stream = malloc(y_len * sizeof *y_stream);
    float *h_n = malloc(h_len * sizeof *h_n), *h_s = malloc(h_len * sizeof *h_s);
    float *c_n = malloc((c_len + 1) * sizeof *c_n), *c_s = malloc((c_len + 1) * sizeof *c_s);
    /* A sawtooth-like input from integer arithmetic: exactly representable, the same anywhere. */
    for (size_t i = 0; i < x_len; i++) x[i] = (float)((i * 7) % 23) / 11.5f - 1.0f;

    /* One forward pass over the whole sequence: (SEQ_LEN, BATCH, input_size), seq-major. */
    if (recur_model_forward(model, x, SEQ_LEN, BATCH, NULL, NULL, NULL, y, y_len, h_n, h_len,
                            c_len ? c_n : NULL, c_len) != 0)
        return fail("recur_model_forward");
    printf("output[0][0][0..3]: %.9g %.9g %.9g\n", y[0], y[1], y[2]);
    printf("h_n[0][0][0..3]: %.9g %.9g %.9g\n", h_n[0], h_n[1], h_n[2]);

    /* A wrong buffer size is an error, and nothing is written. */
    if (recur_model_forward(model, x, SEQ_LEN, BATCH, NULL, NULL, NULL, y, y_len - 1, NULL, 0,
                            NULL, 0) != 0)
        printf("expected error: %s\n", recur_last_error());

    /* The same sequence through a session, in chunks of 1, 3, 7, 1, 3, 7, ... steps. */
    if (recur_session_new(model, 0) == NULL) printf("expected error: %s\n", recur_last_error());
    RecurSession *session = recur_session_new(model, BATCH);
    if (session == NULL) return fail("recur_session_new");
    recur_model_free(model); /* the session keeps what it needs */
    const size_t chunks[3] = {1, 3, 7};
    for (int pass = 0; pass < 2; pass++) {
        size_t t = 0;
        for (int k = 0; t < SEQ_LEN; k++) {
            size_t n = chunks[k % 3];
            if (n > SEQ_LEN - t) n = SEQ_LEN - t;
            if (recur_session_step(session, x + t * BATCH * in, n, y_stream + t * BATCH * w,
                                   n * BATCH * w) != 0)
                return fail("recur_session_step");
            t += n;
        }
        if (recur_session_get_state(session, h_s, h_len, c_len ? c_s : NULL, c_len) != 0)
            return fail("recur_session_get_state");
        int same = memcmp(y, y_stream, y_len * sizeof *y) == 0 &&
                   memcmp(h_n, h_s, h_len * sizeof *h_n) == 0 &&
                   (c_len == 0 || memcmp(c_n, c_s, c_len * sizeof *c_n) == 0);
        printf("%s: chunked == one-shot, bit for bit: %s\n", pass == 0 ? "first pass" : "after reset",
               same ? "yes" : "NO");
        if (!same) return 1;
        if (recur_session_reset(session) != 0) return fail("recur_session_reset");
    }

    /* State can be carried by hand too: put the final state back and continue from it. */
    if (recur_session_set_state(session, h_s, h_len, c_len ? c_s : NULL, c_len) != 0)
        return fail("recur_session_set_state");
    /* An output buffer of the wrong size is an error, and the state does not move. */
    if (recur_session_step(session, x, 1, y_stream, 1) != 0)
        printf("expected error: %s\n", recur_last_error());

    recur_session_free(session);
    free(x);
    free(y);
    free(y_stream);
    free(h_n);
    free(h_s);
    free(c_n);
    free(c_s);
    printf("ok\n");
    return 0;
}
