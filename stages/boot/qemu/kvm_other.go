//go:build !linux

package qemu

import "errors"

func kvmCheck() error { return errors.New("KVM exists only on Linux") }
