#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { JETQA_PICKED = 0, JETQA_ZERO_AT_AREA = 1, JETQA_NO_PICK = 2, JETQA_PICK_FAILED = -1 };

int jetqa_tinycv_pick(const uint8_t *window, int stride, int ww, int wh, const uint8_t *tpl, int tw, int th,
                      int ox, int oy, int qx, int qy, int *x, int *y);

#ifdef __cplusplus
}
#endif
