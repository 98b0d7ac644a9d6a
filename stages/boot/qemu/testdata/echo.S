# echo.img: a 512-byte boot sector for the tests of package qemu. It prints
# a banner on COM1, then echoes every key typed on the keyboard (the ASCII
# code the BIOS makes of it, so shift and punctuation are checked too) and
# every byte received on COM1 back to COM1. Between the two it halts until
# the next interrupt, so an idle guest costs little under TCG.
#
# Rebuild with GNU binutils:
#   as --32 -o echo.o echo.S
#   ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o echo.img echo.o
# SeaBIOS boots it from IDE as it is, from virtio-blk only when the disk
# is larger than one sector, so the tests pad a copy.

	.code16
	.globl _start
_start:
	cli
	xor %ax, %ax
	mov %ax, %ds
	mov %ax, %ss
	mov $0x7c00, %sp
	sti
	cld
	mov $banner, %si
print:
	lodsb
	test %al, %al
	jz poll
	call putc
	jmp print

poll:
	mov $0x01, %ah		# keystroke waiting? ZF clear if so
	int $0x16
	jz serial
	xor %ah, %ah		# take it: AL = ASCII
	int $0x16
	call putc
	jmp poll
serial:
	mov $0x3fd, %dx		# line status: bit 0 = byte received
	in %dx, %al
	test $0x01, %al
	jz idle
	mov $0x3f8, %dx
	in %dx, %al
	call putc
	jmp poll
idle:
	hlt			# the 18.2 Hz timer or a key wakes us
	jmp poll

putc:				# send AL once the transmitter is empty
	push %ax
	mov $0x3fd, %dx
1:	in %dx, %al
	test $0x20, %al
	jz 1b
	pop %ax
	mov $0x3f8, %dx
	out %al, %dx
	ret

banner:
	.asciz "jetqa echo ready\r\n"
	.org 510
	.word 0xaa55
