// OpenCV's thread count, for threads.go.

#include <opencv2/core.hpp>

#include "threads.h"

void jetqa_set_threads(int n) { cv::setNumThreads(n); }

int jetqa_threads(void) { return cv::getNumThreads(); }
