"""pytest plugin (entry point ``pytest11``): options to point the conformance
suite at chosen backends."""


def pytest_addoption(parser):
    group = parser.getgroup("unibackend")
    group.addoption(
        "--unibackend-backends",
        action="store",
        default=None,
        help="comma-separated backends the conformance suite checks against numpy "
        "(default: every installed backend)",
    )
