import pytest


@pytest.fixture(autouse=True)
def _train_tests_on_one_thread(one_thread):
    """Every training test here runs tiny models: one torch thread (the root conftest's ``one_thread``)."""
    yield
