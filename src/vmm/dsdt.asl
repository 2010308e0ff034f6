/* vmsvc's DSDT. Compiled with iasl (acpica-tools) by scripts/gen-dsdt.sh into
 * src/vmm/dsdt_aml.h (committed, so building vmsvc needs no iasl); acpi.c adds
 * the table header and patches the 64-bit window (placeholder values below)
 * for the VM's RAM size. Constants mirror include/vmsvc/pci.h and platform.h:
 * change both together. Choices: docs/devices.md. */
DefinitionBlock ("dsdt.aml", "DSDT", 2, "VMSVC ", "VMSVDSDT", 1)
{
    /* SLP_TYP 5 written to PM1a_CNT with SLP_EN is what the PM device treats as poweroff. */
    Name (_S5, Package (4) { 5, 5, 0, 0 })
    Scope (\_SB)
    {
        /* Linux on an ACPI system enumerates PCI only through root bridges the
         * namespace declares: the legacy conf1 scan never runs. */
        Device (PCI0)
        {
            Name (_HID, EisaId ("PNP0A03"))
            Name (_UID, 0)
            Name (_SEG, 0)
            Name (_BBN, 0)
            Name (_CRS, ResourceTemplate ()
            {
                WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
                    0x0000, 0x0000, 0x0000, 0x0000, 0x0001)
                IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                    0x0000, 0x0000, 0x0CF7, 0x0000, 0x0CF8)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                    0x0000, 0x0D00, 0xFFFF, 0x0000, 0xF300)
                /* PCI_MMIO32_BASE .. PCI_MMIO32_END - 1 (the ECAM window follows) */
                DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
                    0x00000000, 0xC0000000, 0xEFFFFFFF, 0x00000000, 0x30000000)
                /* The 64-bit prefetchable window (pci_mmio64_base(RAM top), PCI_MMIO64_SIZE):
                 * placeholder values, patched by acpi.c. */
                QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Prefetchable, ReadWrite,
                    0x0000000000000000, 0x000000ABCD000000, 0x000000ABCDFFFFFF, 0x0000000000000000,
                    0x0000000001000000)
            })
            /* INTA of slots 1-31 -> GSI 11 (PCI_INTX_GSI), level, active low; the MP
             * table (mptable.c) says the same. */
            Name (_PRT, Package ()
            {
                Package () { 0x0001FFFF, 0, 0, 11 },
                Package () { 0x0002FFFF, 0, 0, 11 },
                Package () { 0x0003FFFF, 0, 0, 11 },
                Package () { 0x0004FFFF, 0, 0, 11 },
                Package () { 0x0005FFFF, 0, 0, 11 },
                Package () { 0x0006FFFF, 0, 0, 11 },
                Package () { 0x0007FFFF, 0, 0, 11 },
                Package () { 0x0008FFFF, 0, 0, 11 },
                Package () { 0x0009FFFF, 0, 0, 11 },
                Package () { 0x000AFFFF, 0, 0, 11 },
                Package () { 0x000BFFFF, 0, 0, 11 },
                Package () { 0x000CFFFF, 0, 0, 11 },
                Package () { 0x000DFFFF, 0, 0, 11 },
                Package () { 0x000EFFFF, 0, 0, 11 },
                Package () { 0x000FFFFF, 0, 0, 11 },
                Package () { 0x0010FFFF, 0, 0, 11 },
                Package () { 0x0011FFFF, 0, 0, 11 },
                Package () { 0x0012FFFF, 0, 0, 11 },
                Package () { 0x0013FFFF, 0, 0, 11 },
                Package () { 0x0014FFFF, 0, 0, 11 },
                Package () { 0x0015FFFF, 0, 0, 11 },
                Package () { 0x0016FFFF, 0, 0, 11 },
                Package () { 0x0017FFFF, 0, 0, 11 },
                Package () { 0x0018FFFF, 0, 0, 11 },
                Package () { 0x0019FFFF, 0, 0, 11 },
                Package () { 0x001AFFFF, 0, 0, 11 },
                Package () { 0x001BFFFF, 0, 0, 11 },
                Package () { 0x001CFFFF, 0, 0, 11 },
                Package () { 0x001DFFFF, 0, 0, 11 },
                Package () { 0x001EFFFF, 0, 0, 11 },
                Package () { 0x001FFFFF, 0, 0, 11 }
            })
        }
        /* Motherboard resources: the ECAM window of the MCFG table
         * (PCI_ECAM_BASE, PCI_ECAM_SIZE). Linux uses MCFG only for a region reserved
         * here or in the e820 map (we do both). */
        Device (MRES)
        {
            Name (_HID, EisaId ("PNP0C02"))
            Name (_UID, 1)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xF0000000, 0x01000000)
            })
        }
    }
}
