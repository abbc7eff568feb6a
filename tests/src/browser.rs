//! Headless Chromium through chromedriver (filled in with the browser tests).
