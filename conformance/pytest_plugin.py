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
        help="the same as --unibackend-modes=eager,compiled",
    )
    group.addoption(
        "--unibackend-modes",
        action="store",
        default="eager",
        help="comma-separated call modes: eager, compiled (every compile path), function, vmap, grad, or all",
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
