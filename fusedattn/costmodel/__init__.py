"""The speed of every block as a GPU of a named profile would see it, computed on a CPU machine:
``python -m fusedattn.costmodel`` (see __main__.py). A model, not a measurement.

  cases      the blocks and cases modelled, and how one call is run
  dryrun     a recording Triton driver: real launch path, specialization and sm_90 compile, no GPU
  traffic    bytes per launch and tensor, counted under Triton's interpreter, with an L2 model
  eager      the ATen kernels and bytes of the eager reference (TorchDispatchMode, meta tensors)
  model      scaled-down counting and extrapolation, the roofline and its constants
  host       host time per call, measured interleaved on this CPU
"""
