"""How close the conv kernels' inner loops come to the Raspberry Pi cores' FMA peak, modelled.

    python bench/arm_mca.py [--out bench/out/arm_mca.md] [--keep DIR]

No board needed: the kernel header (src/deepshift_edge/engine/_gemv.h) is cross-compiled
with Debian's GCC as the package's build compiles it (-O3 -falign-loops=32, no -march/-mcpu: a wheel runs
on every board), each innermost loop that does multiply-adds is cut out of the assembly,
and llvm-mca (LLVM 19) runs it for (the int8 kernels of _qgemv.h too: SDOT, SMLAL, the
requantization, in a second table)

    cortex-a72   the Pi 4's core; peak one 128-bit FMLA (4 multiply-adds) per cycle
    neoverse-n1  stands in for the Pi 5's Cortex-A76 (LLVM 19 models the A76 itself with
                 older tables); peak two 128-bit FMLA (8 multiply-adds) per cycle

for aarch64 (64-bit Pi OS) and armv7 (32-bit userland, Debian armhf's flags: the VFPv3-D16
baseline and the NEON path the build adds for CPUs that have it). The table
gives cycles per iteration (steady state, 200 iterations), multiply-adds per iteration,
cycles per multiply-add, and the fraction of the core's peak.

Needs: gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf, llvm-19 (apt). Not used by CI.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = os.path.join(HERE, "..", "src", "deepshift_edge", "engine")

DRIVER = r"""
#include "_gemv.h"
void push(const float *const *x, const ptrdiff_t *woff, ptrdiff_t n, const ptrdiff_t *clen,
          const float *w, ptrdiff_t nblk, ptrdiff_t bs, ptrdiff_t nout, float *out, float *out2,
          const float *shift, int relu)
{ dse_gemv_push(x, woff, n, clen, w, nblk, bs, nout, out, out2, shift, relu); }
void frames(const float *const *x, ptrdiff_t xs, const ptrdiff_t *woff, ptrdiff_t n,
            const ptrdiff_t *clen, const float *w, ptrdiff_t nblk, ptrdiff_t bs, ptrdiff_t nout,
            ptrdiff_t nf, float *const *out, float *const *out2, ptrdiff_t ooff, const float *shift,
            int relu)
{ dse_gemv_frames(x, xs, woff, n, clen, w, nblk, bs, nout, nf, out, out2, ooff, shift, relu); }
"""

INT8_DRIVER = r"""
#include "_qgemv.h"
#if defined(__aarch64__)
void q_sdot(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n, ptrdiff_t cin, const void *w,
            ptrdiff_t nblk, ptrdiff_t bs, int32_t *acc)
{ dse_qgemv_dotprod(x, chunk, n, cin, w, nblk, bs, acc); }
void q_smlal(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n, ptrdiff_t cin, const void *w,
             ptrdiff_t nblk, ptrdiff_t bs, int32_t *acc)
{ dse_qgemv_smlal(x, chunk, n, cin, w, nblk, bs, acc); }
void requant_neon(const int32_t *acc, const int32_t *bias, const int32_t *m0, const int32_t *sh, int32_t zp,
                  int32_t lo, int32_t hi, int8_t *out, ptrdiff_t n)
{ dse_qrequant_neon(acc, bias, m0, sh, zp, lo, hi, out, n); }
#else
void q_c16_neon(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n, ptrdiff_t cin, const void *w,
                ptrdiff_t nblk, ptrdiff_t bs, int32_t *acc)
{ dse_qgemv_c16_neon(x, chunk, n, cin, w, nblk, bs, acc); }
#endif
void q_plain(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n, ptrdiff_t cin, const void *w,
             ptrdiff_t nblk, ptrdiff_t bs, int32_t *acc)
{ dse_qgemv_c16(x, chunk, n, cin, w, nblk, bs, acc); }
void requant_plain(const int32_t *acc, const int32_t *bias, const int32_t *m0, const int32_t *sh, int32_t zp,
                   int32_t lo, int32_t hi, int8_t *out, ptrdiff_t n)
{ dse_qrequant_base(acc, bias, m0, sh, zp, lo, hi, out, n); }
"""

# int8 multiply-add instructions: (regex, multiply-adds each)
INT8_MACS = [(re.compile(r"^\s*sdot\s+v\d+\.4s"), 16), (re.compile(r"^\s*smlal2?\s+v\d+\.4s"), 4),
             (re.compile(r"^\s*vmlal\.s16\s+q"), 4), (re.compile(r"^\s*vmull\.s16\s+q"), 4)]
# int8 peaks, multiply-adds per cycle: A72 one 128-bit SMLAL (4); N1 two SDOT (32), one SMLAL (4)
INT8_PEAKS = {("cortex-a72", "smlal"): 4, ("neoverse-n1", "sdot"): 32, ("neoverse-n1", "smlal"): 4}
INT8_NOTES = """The armv7 NEON clone (dse_qgemv_c16_neon: the plain C compiled with target("fpu=neon"),
chosen where HWCAP_NEON says so) is vectorised by GCC along the channels (VMULL.S16, VUZP,
VPADD) and spills (a 952-byte frame): a fraction of the A72's SMLAL peak. NEON intrinsics on
armhf need arm_neon.h in a build whose baseline has no NEON (GCC 12 accepts it under
#pragma GCC target("fpu=neon"); the manylinux armv7l compilers were not checked): left."""


def int8_macs(body) -> tuple:
    macs, kind = 0, None
    for x in body:
        for rx, n in INT8_MACS:
            if rx.match(x):
                macs += n
                kind = "sdot" if n == 16 else "smlal"
    return macs, kind


def int8_rows(mca_bin, engine, tmp, cflags):
    """The int8 kernels' inner loops (aarch64: SDOT, SMLAL by lane, the plain C; the
    requantization per output, plain C vs NEON; armv7: the NEON clone of the plain C)."""
    drv = os.path.join(tmp, "qdrv.c")
    with open(drv, "w") as fh:
        fh.write(INT8_DRIVER)
    rows = []
    for target in ("aarch64", "armv7 (armhf default)"):
        cc, flags, triple = TARGETS[target]
        asm_path = os.path.join(tmp, "q_" + re.sub(r"\W+", "_", target) + ".s")
        subprocess.run([cc, "-O3", "-falign-loops=32", "-S", "-I", engine, *flags, *cflags.split(), drv,
                        "-o", asm_path], check=True)
        for func, label, body in loops_of(open(asm_path).read()):
            macs, kind = int8_macs(body)
            outs = sum(1 for x in body if re.match(r"^\s*strb\b", x)) + \
                8 * sum(1 for x in body if re.match(r"^\s*(str\s+d\d+|st1\s+\{v\d+\.8b\})", x))
            if "requant" in func and outs:
                what = f"{func}: {outs} output{'s' * (outs > 1)} per iteration"
            elif macs and ("q_" in func or "qgemv" in func):
                what = f"{func}: {macs} multiply-adds per iteration"
            else:
                continue
            for cpu in CORES:
                if target != "aarch64" and cpu != "cortex-a72":
                    continue
                if kind == "sdot" and cpu == "cortex-a72":
                    continue  # the A72 has no dot-product instructions
                cyc, warn = mca(mca_bin, triple, cpu, body)
                rows.append(dict(target=target, kernel=what, cpu=cpu, insns=len(body), macs=macs, outs=outs,
                                 kind=kind, cycles=cyc, warn=warn))
    return rows


def int8_lines(rows):
    lines = ["", "## int8 kernels", "",
             "Multiply-add loops: cycles per iteration and the fraction of the core's int8 peak (A72: one "
             "128-bit SMLAL per cycle, 4 multiply-adds; N1: two SDOT, 32; one SMLAL, 4). Requantization "
             "loops: cycles per output.", "",
             "| target | inner loop | core | insns | cycles / iter | per multiply-add or output | of peak |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["cycles"] is None:
            lines.append(f"| {r['target']} | {r['kernel']} | {r['cpu']} | {r['insns']} | failed: {r['warn']} | | |")
            continue
        if r["outs"] and not r["macs"]:
            lines.append(f"| {r['target']} | {r['kernel']} | {r['cpu']} | {r['insns']} | {r['cycles']:.2f} | "
                         f"{r['cycles'] / r['outs']:.2f} cycles / output | |")
            continue
        peak = INT8_PEAKS.get((r["cpu"], r["kind"]))
        share = f"{r['macs'] / r['cycles'] / peak:.0%}" if peak else ""
        lines.append(f"| {r['target']} | {r['kernel']} | {r['cpu']} | {r['insns']} | {r['cycles']:.2f} | "
                     f"{r['cycles'] / r['macs']:.3f} cycles / multiply-add | {share} |")
    lines += ["", "Rows below 80% are remainders (the last odd block of 16 outputs, the 1-3 channels past the "
              "last whole quad, each requantization's scalar tail of fewer than 8 outputs) and the plain C "
              "that DSE_QKERNELS=scalar keeps for the tests.", "", INT8_NOTES]
    return lines


# name: (compiler, extra flags, llvm-mca triple)
TARGETS = {
    "aarch64": ("aarch64-linux-gnu-gcc", [], "aarch64-linux-gnu"),
    "armv7 (armhf default)": ("arm-linux-gnueabihf-gcc", [], "armv7-linux-gnueabihf"),
}
CORES = {"cortex-a72": 4, "neoverse-n1": 8}  # multiply-adds per cycle at peak (128-bit FMLA/cycle x 1, x 2)

BRANCH = re.compile(r"^\s+(b|b\.\w+|bne|beq|bgt|blt|bge|ble|bhi|bls|bcc|bcs|cbnz|cbz|tbnz|tbz)\s+"
                    r"(?:[^,]+,\s*)*([.\w$]+)\s*$")
LABEL = re.compile(r"^([.\w$]+):")
FMA = re.compile(r"^\s*(fmla|fmadd|vfma\.f32|vmla\.f32)\s+(\S+)")


NOTES = """What the rows are. push: one frame's matrix-vector product (dse_gemv_push, the bias/ReLU
epilogue fused into its stores), NB blocks of 16 outputs per pass (aarch64: 4, then 2, then 1
for what is left; the 2-block pass is a function of its own there, dse_nbst2: inlined beside
the others, GCC rotated its 8 accumulators through 13 vector moves per iteration, 82% / 71%),
the main loop reading 4 input channels per load (multiply by lane), the
1-channel loop the remainder of a chunk (at most 3 iterations). push_many (frames): up to 4
frames per pass share each weight vector (the 4-frame loop is the one a push_many block runs;
2 and 1 are what is left of a block). armv7 rows are of one armhf build: the scalar VFP
baseline (`*_base`, plain floats, one block of 16 accumulators per pass; DSE_KERNELS=baseline)
and the NEON path the same build picks at run time where AT_HWCAP has NEON and VFPv4
(`*_neon`: intrinsics, vfma on q registers, 2 blocks or 2 frames per pass, each block's 16
weights loaded by two 4-register vld1).

Peaks: Cortex-A72 one 128-bit FMLA per cycle (4 multiply-adds); Neoverse-N1 (the Pi 5's A76
twin) two (8). Scalar VFP on armv7 can at best reach 1 multiply-add per cycle, i.e. 25% of
the A72's 128-bit peak. GCC does not do float vector arithmetic with ARMv7 NEON through C
operators (NEON is not IEEE: denormals flush to zero), hence intrinsics on that path. Its
weight loads are two lines of inline assembly (a 4-register vld1 each): left to itself GCC
splits a block into single-register vld1, each after an address add (vld1 takes no immediate
offset), and the 2-block push loop was held at 66% by the instructions dispatched.
LLVM 19 has no AArch32 scheduling model for neoverse-n1 (nor the A76), hence no Pi 5 figure
for armv7.

Below 80%: the 1-block push loop on N1 (4 accumulator chains: latency-bound; it runs for an
odd last block, e.g. 16 or 48 outputs), the 1- and 2-frame push_many remainders (latency),
the 1-channel remainder loops (a chunk's last 1-3 channels; none where a layer's channels are
a multiple of 4), and the armv7 NEON 1-block remainders (spilled accumulators);
each output's terms keep one order, so chains cannot be split without changing results."""


def find_mca() -> str:
    for cand in ("llvm-mca-19", "/usr/lib/llvm-19/bin/llvm-mca"):
        path = shutil.which(cand) or (cand if os.path.exists(cand) else None)
        if path:
            return path
    sys.exit("llvm-mca from LLVM 19 not found: apt-get install llvm-19")


def lanes(insn: str) -> int:
    """Multiply-adds one FMA instruction does."""
    m = FMA.match(insn)
    dst = m.group(2).rstrip(",")
    if dst.startswith("v") and ".4s" in insn:
        return 4
    if dst.startswith("v") and ".2s" in insn:
        return 2
    if dst.startswith("q"):
        return 4
    if dst.startswith("d") and m.group(1).startswith("v"):  # armv7 NEON d register: 2 floats
        return 2
    return 1  # scalar s register


def inner_loops(asm: str):
    """(function, label, body lines) of every innermost loop with float multiply-adds."""
    for func, label, body in loops_of(asm):
        if any(FMA.match(x) for x in body):
            yield func, label, body


def loops_of(asm: str):
    """(function, label, body lines) of every innermost loop."""
    lines = asm.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := LABEL.match(line))}
    loops = []
    for j, line in enumerate(lines):
        m = BRANCH.match(line)
        if m and m.group(2) in labels and labels[m.group(2)] < j:
            loops.append((labels[m.group(2)], j))
    for i, j in loops:
        if any(i <= a and b <= j and (a, b) != (i, j) for a, b in loops):
            continue  # not innermost
        body = [x.strip() for x in lines[i + 1:j + 1]
                if x.strip() and not x.strip().startswith((".", "//", "@")) and not LABEL.match(x)]
        if any(re.match(r"(ret|pop|bx\s+lr)\b", x) or "x29, x30" in x for x in body):
            continue  # not a loop: blocks laid out between a label and a later branch back to it
        k = i
        while k > 0 and not re.match(r"^[A-Za-z_]\w*:", lines[k]):
            k -= 1
        yield lines[k].rstrip(":"), lines[i].rstrip(":"), body


def kernel_name(func: str, body) -> str:
    """What the loop is: entry point, output blocks of 16 and input channels per iteration
    (4 per iteration: the main loop of a 4-inputs-per-load kernel; 1: a remainder or a
    one-input-per-iteration loop), and stack traffic if any (spilled registers)."""
    fmas = [x for x in body if FMA.match(x)]
    macs = sum(lanes(x) for x in fmas)
    # channels: the input lanes the FMAs multiply by (v0.s[0..3]: a 4-inputs-per-load loop), else
    # one; blocks (or frames) of 16 outputs follow from the multiply-adds. Counting accumulator
    # registers instead miscounts where GCC rotates accumulators through extra registers.
    channels = len(set(re.findall(r"\.s\[(\d)\]", " ".join(fmas)))) or 1
    blocks = max(1, round(macs / (16 * channels)))
    spills = sum(1 for x in body if "sp" in re.split(r"[\s,\[\]{}!]+", x))
    if "push" in func or "blocked" in func or "nbst" in func:  # nbst2: the 2-block pass, its own function on aarch64
        kind = f"push: {blocks} block{'s' * (blocks > 1)} x 16 outputs"
    elif "frames" in func:
        kind = f"push_many (frames): {blocks} frame{'s' * (blocks > 1)} x 16 outputs"
    else:
        kind = func
    return f"{kind}, {channels} input channel{'s' * (channels > 1)} per iteration" + \
        (f", {spills} stack accesses" if spills else "")


def mca(mca_bin, triple, cpu, body, iterations=200):
    with tempfile.NamedTemporaryFile("w", suffix=".s", delete=False) as fh:
        fh.write("\n".join(body) + "\n")
        path = fh.name
    try:
        out = subprocess.run([mca_bin, f"-mtriple={triple}", f"-mcpu={cpu}", f"-iterations={iterations}", path],
                             capture_output=True, text=True)
    finally:
        os.unlink(path)
    if out.returncode != 0:
        err = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "llvm-mca failed"
        if "unable to find instruction-level scheduling information" in err:
            err = f"LLVM 19 has no scheduling model for {cpu} on {triple.split('-')[0]}"
        return None, err
    total = int(re.search(r"Total Cycles:\s+(\d+)", out.stdout).group(1))
    warn = "no scheduling model" if "no scheduling model" in (out.stderr + out.stdout).lower() else ""
    return total / iterations, warn


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "out", "arm_mca.md"))
    ap.add_argument("--keep", default=None, help="also keep the assembly files here")
    ap.add_argument("--engine", default=ENGINE, help="directory holding the _gemv.h to analyse")
    ap.add_argument("--cflags", default="", help="extra compiler flags (to try a variant)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of: " + ", ".join(TARGETS))
    args = ap.parse_args(argv)
    mca_bin = find_mca()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        drv = os.path.join(tmp, "drv.c")
        with open(drv, "w") as fh:
            fh.write(DRIVER)
        for target in args.targets.split(","):
            cc, flags, triple = TARGETS[target]
            if not shutil.which(cc):
                sys.exit(f"{cc} not found: apt-get install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf")
            asm_path = os.path.join(tmp, re.sub(r"\W+", "_", target) + ".s")
            subprocess.run([cc, "-O3", "-falign-loops=32", "-S", "-I", args.engine, *flags,
                            *args.cflags.split(), drv, "-o", asm_path], check=True)
            if args.keep:
                os.makedirs(args.keep, exist_ok=True)
                shutil.copy(asm_path, args.keep)
            asm = open(asm_path).read()
            for func, label, body in inner_loops(asm):
                macs = sum(lanes(x) for x in body if FMA.match(x))
                for cpu, peak in CORES.items():
                    if not triple.startswith("aarch64") and cpu != "cortex-a72":
                        continue  # LLVM 19 has no AArch32 model of the N1 (nor the A76)
                    cyc, warn = mca(mca_bin, triple, cpu, body)
                    path = "" if not target.startswith("armv7") else \
                        " [NEON path]" if func.endswith("_neon") else " [VFP baseline]"
                    rows.append(dict(target=target, kernel=kernel_name(func, body) + path, label=label, cpu=cpu,
                                     insns=len(body), macs=macs, cycles=cyc, peak=peak, warn=warn))
    cc_version = subprocess.run(["aarch64-linux-gnu-gcc", "--version"], capture_output=True,
                                text=True).stdout.splitlines()[0]
    mca_version = next((x.strip() for x in subprocess.run([mca_bin, "--version"], capture_output=True,
                                                           text=True).stdout.splitlines() if "version" in x), "")
    head = ("| target | kernel inner loop | core | insns | multiply-adds / iter | cycles / iter | "
            "cycles / multiply-add | peak cycles / multiply-add | of peak |")
    lines = ["# Conv kernel inner loops under llvm-mca", "",
             f"`python bench/arm_mca.py` ({cc_version}, -O3; {mca_version}). Steady state of 200 iterations.",
             "One iteration = one input channel of one chunk.", "", head, "|" + "---|" * 9]
    for r in rows:
        if r["cycles"] is None:
            lines.append(f"| {r['target']} | {r['kernel']} | {r['cpu']} | {r['insns']} | {r['macs']} | "
                         f"failed: {r['warn']} | | | |")
            continue
        cpm = r["cycles"] / r["macs"]
        lines.append(f"| {r['target']} | {r['kernel']} | {r['cpu']} | {r['insns']} | {r['macs']} | "
                     f"{r['cycles']:.2f} | {cpm:.3f} | {1 / r['peak']:.3f} | "
                     f"{100 / r['peak'] / cpm:.0f}%{' (' + r['warn'] + ')' if r['warn'] else ''} |")
    lines += ["", NOTES]
    with tempfile.TemporaryDirectory() as tmp:
        lines += int8_lines(int8_rows(mca_bin, args.engine, tmp, args.cflags))
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
