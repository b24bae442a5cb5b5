"""Two costs of Triton's interpreter that the CPU test run and the cost model's traffic count do not need.

1. Every call of a ``@triton.jit`` device function (``_tap``, ``pool_slab``, ``tl.zeros``, ...) from
   inside a launched kernel re-patches ``triton.language`` (``_patch_lang``: ``inspect.getmembers``
   over the language modules, about 6 ms a call, never restored), although the launch has already
   patched the same modules. Here a device-function call patches only language modules the launch
   has not patched yet, and the launch's restore undoes those too. The patching does not depend on
   the function beyond which language modules its globals hold, so the kernels run the same code.
2. The interpreter checks every 32-bit integer add, sub and mul for overflow (``sanitize_overflow``:
   the operands cast to int64 and a device assert, about 1.5 ms each); the compiler inserts that
   check only with ``debug=True``, so compiled kernels never carry it. At the CPU run's shapes
   (kilobytes) no index comes near 2**31; the offsets past 2**31 elements are tested on a GPU
   (tests/test_autocast_and_modes.py). ``FUSEDATTN_INTERPRETER_OVERFLOW_CHECK=1`` keeps the check.

Measured on the 2-core CI machine, one CBAM float64 forward+backward at 2x3x2x3: 2.6 s -> 0.7 s.
``install()`` is called by tests/conftest.py, bench/conftest.py, the processes the tests spawn and the
cost model's traffic subprocesses, never on importing fusedattn. It changes nothing when the
interpreter is off or when its internals are not the ones described here.
"""
import dataclasses
import os


def install() -> bool:
    """Apply both changes to Triton's interpreter; True if applied (or already), False if not."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    import triton.language as tl
    import triton.runtime.interpreter as interpreter

    if not all(hasattr(interpreter, name) for name in ("_patch_lang", "_LangPatchScope", "interpreter_builder")):
        return False
    if getattr(interpreter._patch_lang, "_fusedattn_once", False):
        return True
    patch_lang = interpreter._patch_lang
    launch = {"patched": None, "nested": []}  # the running launch's language modules, nested scopes

    def language_modules(fn) -> frozenset:
        return frozenset(id(v) for v in fn.__globals__.values() if v is tl or v is tl.core)

    def patch_lang_once(fn):
        langs = language_modules(fn)
        if launch["patched"] is not None:           # a device function inside a launch
            if langs <= launch["patched"]:
                return interpreter._LangPatchScope()
            launch["patched"] = launch["patched"] | langs
            scope = patch_lang(fn)
            launch["nested"].append(scope)
            return scope
        scope = patch_lang(fn)                      # a launch (GridExecutor), restored at its end
        restore = scope.restore

        def restore_launch():
            nested, launch["patched"], launch["nested"] = launch["nested"], None, []
            for inner in reversed(nested):
                inner.restore()
            restore()

        scope.restore = restore_launch
        launch["patched"] = langs
        return scope

    patch_lang_once._fusedattn_once = True
    interpreter._patch_lang = patch_lang_once
    options = interpreter.interpreter_builder.options
    if (os.environ.get("FUSEDATTN_INTERPRETER_OVERFLOW_CHECK") != "1"
            and dataclasses.is_dataclass(options) and hasattr(options, "sanitize_overflow")):
        interpreter.interpreter_builder.options = dataclasses.replace(options, sanitize_overflow=False)
    return True
