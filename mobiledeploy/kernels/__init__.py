"""Device latency from the runtimes' own aarch64 kernels: counted under qemu, scheduled by llvm-mca.

``estimate.estimate_kernels(path, target)`` is the entry point (``mobiledeploy estimate
--method kernels``); ``trace`` counts, ``disasm`` decodes, ``sched`` schedules, ``model``
turns cycles into milliseconds. Needs ``make arm-env`` (qemu, the arm64 runtimes, LLVM 19).
"""
