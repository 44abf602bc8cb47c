"""pytest plugin (entry point ``pytest11``): options to point the conformance
suite at chosen backends.  Loaded in every pytest run, so it only adds
options; the suite itself is ``pytest --pyargs unibackend.conformance``."""


def pytest_addoption(parser):
    group = parser.getgroup("unibackend")
    group.addoption(
        "--unibackend-plugin",
        action="append",
        default=[],
        metavar="[NAME=]MODULE:CLASS",
        help="register a plugin class from its import path before the conformance suite runs "
        "(repeatable; as unibackend conformance --plugin)",
    )
    group.addoption(
        "--unibackend-backends",
        action="store",
        default=None,
        help="comma-separated backends the conformance suite checks against numpy "
        "(default: every installed backend)",
    )
    group.addoption(
        "--unibackend-ops",
        action="store",
        default=None,
        help="comma-separated ops (or check names) the conformance suite runs (default: all)",
    )
    group.addoption(
        "--unibackend-profile",
        action="store",
        default="ci",
        choices=("ci", "thorough"),
        help="hypothesis profile of the conformance suite: ci (derandomized) or thorough",
    )
    group.addoption(
        "--unibackend-max-examples",
        action="store",
        type=int,
        default=None,
        help="examples per conformance check and backend (overrides the profile)",
    )
    group.addoption(
        "--unibackend-compiled",
        action="store_true",
        default=False,
        help="also run each conformance check's op inside the backend's compiler "
        "(Backend.compile: torch.compile, tf.function(jit_compile=True), jax.jit, ...): it must agree with eager",
    )


def pytest_configure(config):
    specs = config.getoption("unibackend_plugin", default=None)
    if specs:
        import pytest

        from .runner import register_plugins

        try:
            register_plugins(specs)
        except ValueError as e:
            raise pytest.UsageError(str(e)) from None
