"""Fixtures shared by integration test modules: the console's headless browser
(``support.browser``: ``chromium``, ``browser_page``, ``console_url``)."""

from support.browser import browser_page, chromium, console_url

__all__ = ["browser_page", "chromium", "console_url"]
