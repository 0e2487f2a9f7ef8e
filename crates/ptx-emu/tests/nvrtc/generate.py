#!/usr/bin/env python3
"""Compiles every *.cu in this folder to PTX with NVRTC 12.4 (what the tests' fixtures are).

    python3 -m pip install --target /tmp/nvrtc124 nvidia-cuda-nvrtc-cu12==12.4.127
    python3 generate.py [/tmp/nvrtc124/nvidia/cuda_nvrtc/lib/libnvrtc.so.12]

Writes NAME.ptx beside NAME.cu. The options are what NVRTC users pass for an sm_80 build.
"""
import ctypes
import pathlib
import sys

OPTIONS = [b"--gpu-architecture=compute_80", b"--std=c++17", b"-default-device"]
DEFAULT_LIB = "/tmp/nvrtc124/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"


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


def compile_to_ptx(nvrtc, source, name):
    program = ctypes.c_void_p()
    check(nvrtc, nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, name, 0, None, None), f"{name}: creating the program")
    options = (ctypes.c_char_p * len(OPTIONS))(*OPTIONS)
    check(nvrtc, nvrtc.nvrtcCompileProgram(program, len(OPTIONS), options), f"{name}: compiling", program)
    size = ctypes.c_size_t()
    check(nvrtc, nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size)), f"{name}: PTX size")
    buffer = ctypes.create_string_buffer(size.value)
    check(nvrtc, nvrtc.nvrtcGetPTX(program, buffer), f"{name}: PTX")
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    return buffer.value.decode()


def main():
    nvrtc = ctypes.CDLL(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_LIB)
    nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    if (major.value, minor.value) != (12, 4):
        sys.exit(f"NVRTC {major.value}.{minor.value} found; the fixtures are NVRTC 12.4's output")
    here = pathlib.Path(__file__).resolve().parent
    for cu in sorted(here.glob("*.cu")):
        ptx = compile_to_ptx(nvrtc, cu.read_bytes(), cu.name.encode())
        cu.with_suffix(".ptx").write_text(ptx)
        print(f"{cu.name} -> {cu.with_suffix('.ptx').name} ({len(ptx)} bytes)")


if __name__ == "__main__":
    main()
