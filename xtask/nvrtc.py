#!/usr/bin/env python3
"""Compiles CUDA C files to PTX with NVRTC 12.4 (ctypes, no CUDA toolkit), the one NVRTC driver
of the repository: `cargo xtask build-kernels` runs it on the CUDA backend's kernels, and
crates/ptx-emu/tests/nvrtc/generate.py on the emulator's fixtures.

    python3 -m pip install --target /tmp/nvrtc124 nvidia-cuda-nvrtc-cu12==12.4.127
    python3 xtask/nvrtc.py [--lib PATH] [--include DIR]... [--check] FILE.cu...

Writes FILE.ptx beside each FILE.cu (kernels.cu -> kernels.ptx); with --check writes nothing and
exits 1 when a checked-in .ptx differs from what NVRTC makes (stale). It refuses an NVRTC other
than 12.4, so the checked-in PTX is reproducible. Exit 3: no NVRTC library found.
"""
import argparse
import ctypes
import pathlib
import sys

OPTIONS = [b"--gpu-architecture=compute_80", b"--std=c++17", b"-default-device"]
DEFAULT_LIBS = ["/tmp/nvrtc124/nvidia/cuda_nvrtc/lib/libnvrtc.so.12", "libnvrtc.so.12"]


def check(nvrtc, status, what, program=None):
    if status == 0:
        return
    message = nvrtc.nvrtcGetErrorString(status).decode()
    log = ""
    if program is not None:
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        buffer = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, buffer)
        log = buffer.value.decode()
    sys.exit(f"{what}: {message}\n{log}")


def compile_to_ptx(nvrtc, source, name, includes):
    program = ctypes.c_void_p()
    check(nvrtc, nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, name, 0, None, None), f"{name}: creating the program")
    opts = OPTIONS + [b"--include-path=" + str(d).encode() for d in includes]
    options = (ctypes.c_char_p * len(opts))(*opts)
    check(nvrtc, nvrtc.nvrtcCompileProgram(program, len(opts), options), f"{name}: compiling", program)
    size = ctypes.c_size_t()
    check(nvrtc, nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size)), f"{name}: PTX size")
    buffer = ctypes.create_string_buffer(size.value)
    check(nvrtc, nvrtc.nvrtcGetPTX(program, buffer), f"{name}: PTX")
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    return buffer.value.decode()


def load(lib):
    for candidate in [lib] if lib else DEFAULT_LIBS:
        try:
            return ctypes.CDLL(candidate)
        except OSError:
            continue
    print("NVRTC not found (pip install --target /tmp/nvrtc124 nvidia-cuda-nvrtc-cu12==12.4.127)", file=sys.stderr)
    sys.exit(3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib")
    ap.add_argument("--include", action="append", default=[])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    nvrtc = load(args.lib)
    nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    if (major.value, minor.value) != (12, 4):
        sys.exit(f"NVRTC {major.value}.{minor.value} found; the checked-in PTX is NVRTC 12.4's output")
    stale = []
    for name in args.files:
        cu = pathlib.Path(name)
        ptx = compile_to_ptx(nvrtc, cu.read_bytes(), cu.name.encode(), args.include)
        out = cu.with_suffix(".ptx")
        if args.check:
            if not out.exists() or out.read_text() != ptx:
                stale.append(str(out))
        else:
            out.write_text(ptx)
            print(f"{cu} -> {out.name} ({len(ptx)} bytes)")
    if stale:
        sys.exit("stale PTX (regenerate with `cargo xtask build-kernels --regenerate`): " + ", ".join(stale))


if __name__ == "__main__":
    main()
