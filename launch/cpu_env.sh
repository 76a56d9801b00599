# shellcheck shell=bash
# Sourced by launch/demo.sh; source it before a CPU run or benchmark. XLA's CPU backend takes a
# step's temporaries (GBs) from glibc's malloc every step and gives them back; glibc returns big
# blocks to the kernel at once, so every step faults them in again (clip_vit_s16 in f32: 1.4M
# page faults and ~4 s of kernel time per step, more in a VM). One arena, no mmap'd blocks and
# no trimming keep them in the process: 0 faults after the first steps, 10-15% faster steps.
# Accelerator hosts do not need it; a GLIBC_TUNABLES already set is left as it is.
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:glibc.malloc.top_pad=1073741824}
