"""The conformance suite as pytest tests, one per (check, backend):

    pytest -p no:cacheprovider --pyargs unibackend.conformance --unibackend-backends=numpy,mine

runs the same checks as ``unibackend conformance`` (options in
:mod:`unibackend.conformance.pytest_plugin`); a failure's message is the
reproducer.
"""
import pytest

from unibackend.conformance import engine


def pytest_generate_tests(metafunc):
    if "conformance_check" not in metafunc.fixturenames:
        return
    opt = metafunc.config.getoption
    names = opt("unibackend_backends")
    backends = [b.strip() for b in names.split(",") if b.strip()] if names else engine.default_backends()
    ops = opt("unibackend_ops")
    checks = engine.select_checks([o.strip() for o in ops.split(",") if o.strip()] if ops else None)
    from unibackend.conformance.runner import parse_modes

    modes = parse_modes(opt("unibackend_modes"))
    if opt("unibackend_compiled"):
        modes = tuple(m for m in engine.MODES if m in set(modes) | {"eager", "compiled"})
    per_backend = {b: engine.backend_modes(b, modes) for b in backends}
    triples = [(c, b, m) for c in checks for b in backends for m in per_backend[b]]
    metafunc.parametrize("conformance_check,backend,mode", triples,
                         ids=[f"{c.name.replace(' ', '_')}-{b}" + ("" if m == "eager" else f"-{m}")
                              for c, b, m in triples])


def test_backend_agrees_with_reference(conformance_check, backend, mode, request):
    """The backend meets the check's properties and agrees with the numpy
    reference on every generated case (see the check's docstring); in the
    other call modes, with the op run inside a compile path, ub.function,
    the framework's vmap or its gradient transforms."""
    opt = request.config.getoption
    result = engine.run_check(conformance_check, backend, profile=opt("unibackend_profile"),
                              max_examples=opt("unibackend_max_examples"), mode=mode)
    if result.status == "skip":
        pytest.skip(result.reason)
    if result.status == "fail":
        pytest.fail(f"{result.reason}\n\nreproducer:\n{result.reproducer}", pytrace=False)
