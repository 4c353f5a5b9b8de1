"""Browser tests: register their marker (the project's marker list is in pyproject.toml)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives headless Chromium")
