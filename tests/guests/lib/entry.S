/* PVH entry, static long-mode tables, interrupt stubs, CPL3 call/return and
 * the AP trampoline. Guest CPL0 code is emulated on this host (~1.2 us per
 * instruction), so the boot path is a straight line of ~20 instructions: the
 * page tables and GDT are assembled statically, nothing is computed at runtime. */

#define PTE_P 0x1
#define PTE_RW 0x2
#define PTE_US 0x4
#define PTE_PWT 0x8
#define PTE_PCD 0x10
#define PTE_PS 0x80
#define CR0_PE 0x1
#define CR0_ET 0x10
#define CR0_PG 0x80000000
#define CR4_PAE 0x20
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define KIT_AP_STACK 8192
#define KIT_MAX_APS 15

/* ---- PVH ELF note: Xen, XEN_ELFNOTE_PHYS32_ENTRY (18), 32-bit entry ---- */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4                 /* namesz */
	.long 4                 /* descsz */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long pvh_entry
	/* QEMU 7.2 reads this desc as a 64-bit value: the 4 bytes after the note
	 * (outside the PT_NOTE segment, so strict parsers see one clean note)
	 * must be zero. */
	.section .xen_note_pad, "a"
	.long 0

/* ---- BSP entry: 32-bit protected mode, paging off, EBX = hvm_start_info ---- */
	.section .text.entry, "ax"
	.code32
	.globl pvh_entry
pvh_entry:
	cli
	lgdt kit_gdt_ptr
	mov $kit_pml4, %eax
	mov %eax, %cr3
	mov $CR4_PAE, %eax
	mov %eax, %cr4
	mov $MSR_EFER, %ecx
	mov $EFER_LME, %eax
	xor %edx, %edx
	wrmsr
	mov $(CR0_PG | CR0_ET | CR0_PE), %eax
	mov %eax, %cr0
	ljmp $0x08, $long_entry

	.code64
long_entry:
	mov $0x10, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov $kit_bsp_stack_top, %esp
	cld
	/* .bss is zero in both loaders' fresh RAM, but do not rely on it. */
	mov $__bss_start, %edi
	mov $__bss_end, %ecx
	sub %edi, %ecx
	xor %eax, %eax
	rep stosb
	mov %ebx, %edi
	call kit_start
1:	cli
	hlt
	jmp 1b

/* ---- AP trampoline: copied to KIT_AP_TRAMPOLINE (0x70000), entered by SIPI in
 * real mode at CS=0x7000, IP=0. It only switches to protected mode and jumps
 * into the image, which does the rest with the BSP's tables. ---- */
	.code16
	.globl kit_ap_tramp_start, kit_ap_tramp_end
kit_ap_tramp_start:
	cli
	lgdtl %cs:tramp_gdtr - kit_ap_tramp_start
	mov %cr0, %eax
	or $CR0_PE, %eax
	mov %eax, %cr0
	ljmpl $0x38, $ap_entry32
	.balign 4
tramp_gdtr:
	.word kit_gdt_end - kit_gdt - 1
	.long kit_gdt
kit_ap_tramp_end:

	.code32
ap_entry32:
	mov $0x10, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov $kit_pml4, %eax
	mov %eax, %cr3
	mov $CR4_PAE, %eax
	mov %eax, %cr4
	mov $MSR_EFER, %ecx
	mov $EFER_LME, %eax
	xor %edx, %edx
	wrmsr
	mov $(CR0_PG | CR0_ET | CR0_PE), %eax
	mov %eax, %cr0
	ljmp $0x08, $ap_entry64

	.code64
ap_entry64:
	mov $1, %eax
	lock xadd %eax, kit_ap_next(%rip)
	cmp $KIT_MAX_APS, %eax
	jae 2f
	mov %eax, %edi
	lea 1(%rax), %ecx
	imul $KIT_AP_STACK, %ecx
	lea kit_ap_stacks(%rip), %rsp
	add %rcx, %rsp
	cld
	call kit_ap_main
2:	cli
	hlt
	jmp 2b

/* ---- interrupt stubs: 256 entries of 16 bytes at kit_isr_stubs + 16*vector ---- */
	.text
	.balign 16
	.globl kit_isr_stubs
kit_isr_stubs:
	.set vec, 0
	.rept 256
	.balign 16
	/* The CPU pushes an error code for 8, 10-14, 17, 21, 29, 30. */
	.if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq $0
	.endif
	pushq $vec
	jmp isr_common
	.set vec, vec + 1
	.endr

isr_common:
	push %rax
	push %rbx
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %rbp
	push %r8
	push %r9
	push %r10
	push %r11
	push %r12
	push %r13
	push %r14
	push %r15
	mov %rsp, %rdi
	cld
	call kit_isr_dispatch
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rbp
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rbx
	pop %rax
	add $16, %rsp
	iretq

/* ---- CPL3 calls ----
 * long kit_user_enter(long (*fn)(long) %rdi, long arg %rsi, void *ustack_top %rdx)
 * iretq to fn at CPL3 with its return address set to kit_user_return_stub,
 * whose ud2 the #UD handler recognises; it then calls kit_user_resume(result),
 * which restores the kernel stack saved here and returns from kit_user_enter. */
	.globl kit_user_enter, kit_user_return_stub, kit_user_resume
kit_user_enter:
	pushfq                  /* the return path comes through an interrupt gate (IF=0) */
	push %rbx
	push %rbp
	push %r12
	push %r13
	push %r14
	push %r15
	mov %rsp, kit_user_saved_rsp(%rip)
	and $-16, %rdx
	sub $8, %rdx
	movq $kit_user_return_stub, (%rdx)
	pushq $0x1b             /* SS: user data */
	push %rdx               /* RSP */
	pushq $0x202            /* RFLAGS: IF */
	pushq $0x23             /* CS: user code64 */
	push %rdi               /* RIP */
	mov %rsi, %rdi
	iretq
kit_user_return_stub:
	ud2
kit_user_resume:
	mov %rdi, %rax
	mov kit_user_saved_rsp(%rip), %rsp
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %rbp
	pop %rbx
	popfq
	ret

/* ---- static data: page tables, GDT ---- */
	.section .data.pagetables, "aw"
	.balign 4096
	.globl kit_pml4
kit_pml4:
	.quad kit_pdpt + (PTE_P | PTE_RW | PTE_US)
	.fill 511, 8, 0
kit_pdpt:
	.set i, 0
	.rept 4
	.quad kit_pd + i * 4096 + (PTE_P | PTE_RW | PTE_US)
	.set i, i + 1
	.endr
	.fill 508, 8, 0
	/* 4 GiB identity map in 2 MiB pages; the top GiB (MMIO) uncached. */
kit_pd:
	.set i, 0
	.rept 2048
	.if i >= 1536
	.quad (i << 21) + (PTE_P | PTE_RW | PTE_US | PTE_PS | PTE_PWT | PTE_PCD)
	.else
	.quad (i << 21) + (PTE_P | PTE_RW | PTE_US | PTE_PS)
	.endif
	.set i, i + 1
	.endr

	.data
	.balign 16
	.globl kit_gdt, kit_gdt_tss
kit_gdt:
	.quad 0
	.quad 0x00af9b000000ffff        /* 0x08 kernel code64 (accessed set: no writes) */
	.quad 0x00cf93000000ffff        /* 0x10 kernel data */
	.quad 0x00cff3000000ffff        /* 0x18 user data (0x1b) */
	.quad 0x00affb000000ffff        /* 0x20 user code64 (0x23) */
kit_gdt_tss:
	.quad 0, 0                      /* 0x28 TSS, filled by kit_start */
	.quad 0x00cf9b000000ffff        /* 0x38 kernel code32 (AP trampoline) */
kit_gdt_end:
	.balign 8
	.word 0, 0, 0
kit_gdt_ptr:
	.word kit_gdt_end - kit_gdt - 1
	.quad kit_gdt

	.globl kit_ap_next
kit_ap_next:
	.long 0
	.balign 8
kit_user_saved_rsp:
	.quad 0

/* Stacks are not zeroed (section .noinit). */
	.section .noinit, "aw", @nobits
	.balign 16
	.globl kit_bsp_stack_top, kit_ap_stacks
	.skip 16384
kit_bsp_stack_top:
kit_ap_stacks:
	.skip KIT_AP_STACK * (KIT_MAX_APS + 1)
