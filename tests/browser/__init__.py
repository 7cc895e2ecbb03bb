"""The demo in a real browser: Debian's Chromium driven by Playwright (oldest version only)."""
