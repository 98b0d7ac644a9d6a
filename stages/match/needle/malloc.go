package needle

// #include <malloc.h>
import "C"

// HoldFreedMemory makes the C allocator keep freed memory for reuse rather
// than hand large blocks back to the kernel after each use. matchTemplate
// allocates and frees megabytes of FFT buffers per search; with glibc's
// defaults each of them is mapped and unmapped again, which makes a search
// about a quarter slower. It holds for the whole process, and keeps up to
// 256 MiB of freed memory: the matcher pool calls it when it starts.
func HoldFreedMemory() {
	C.mallopt(C.M_MMAP_THRESHOLD, 32<<20) // glibc's largest
	C.mallopt(C.M_TRIM_THRESHOLD, 256<<20)
}
