#include <stdint.h>

enum { JETQA_FOUND = 0, JETQA_NOTHING_CLOSE = 1, JETQA_TOO_COSTLY = 2 };

typedef struct {
	int x, y;     // the position picked, relative to the window
	int64_t ssd;  // the sum of squared differences there
	int64_t work; // pixel operations spent
	int tied;      // float32 sums could pick another position
	int64_t slack; // how far above the candidates' limit a sum counts for that
} jetqa_match;

int64_t jetqa_tie_slack(int64_t wsq, int64_t tsq);

int jetqa_exact_search(const uint8_t *screen, int stride, int ww, int wh,
                       const uint8_t *tpl, int tw, int th, int ox, int oy,
                       int qx, int qy, int64_t budget, uint32_t *ii, uint32_t *iq, jetqa_match *out);

int jetqa_fft_search(double *a, int astride, int pw, int ph, const uint8_t *screen, int stride, int ww, int wh,
                     const uint8_t *tpl, int tw, int th, int ox, int oy, int qx, int qy,
                     int64_t budget, jetqa_match *out);
double jetqa_fft_bound(int pw, int ph, int64_t wsum, int64_t wsq, int64_t tsum, int64_t tsq);
