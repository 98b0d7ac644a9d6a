package qemu

// QMPTimeout lets tests wait less for a hung QEMU.
var QMPTimeout = &qmpTimeout
