#ifdef __cplusplus
extern "C" {
#endif

void jetqa_set_threads(int n);
int jetqa_threads(void);

#ifdef __cplusplus
}
#endif
