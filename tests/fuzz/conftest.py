import pytest


@pytest.fixture
def fuzz_cases(request):
    """``--fuzz-cases N``, or a test's CI-sized default when it is not given."""
    given = request.config.getoption("--fuzz-cases")

    def cases(default):
        return default if given is None else given
    return cases
