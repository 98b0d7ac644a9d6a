package qemu

import "syscall"

// procAttr makes the kernel kill QEMU when the thread that started it
// dies, so a crashed worker leaves no VM behind. The Go runtime keeps its
// threads for the life of the process, unless a goroutine that locked
// itself to one exits: don't call Start from such a goroutine.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
