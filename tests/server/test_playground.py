"""The web playground in headless Chromium (Debian's, through Playwright): type a prompt, watch the
streamed text appear."""
def _page(browser):
    """A page whose waits allow for a loaded CI machine (the suite runs trainings beside the server)."""
    page = browser.new_page()
    page.set_default_timeout(90_000)
    return page


def test_playground_streams_text(server, browser):
    page = _page(browser)
    page.goto(server.url + "/")
    page.wait_for_selector("#gen-model option[value='tiny']", state="attached")
    page.select_option("#gen-model", "tiny")
    page.fill("#prompt", "KING:")
    page.fill("#max-tokens", "2048")
    page.fill("#seed", "3")
    # Text appears while the request is still running (the Stop button is live only during a stream). An
    # observer records it as it happens, so a fast stream cannot slip between two polls of a busy browser.
    page.evaluate("""() => {
        window.sawLive = false;
        const out = document.getElementById('output');
        new MutationObserver(() => {
            if (out.textContent.length > 'KING:'.length + 20 && !document.getElementById('stop').disabled)
                window.sawLive = true;
        }).observe(out, {childList: true, characterData: true, subtree: true});
    }""")
    page.click("#go")
    page.wait_for_function("window.sawLive === true")
    # ... and the stream ends with the token count from the usage chunk.
    page.wait_for_function("document.getElementById('gen-status').textContent.includes('tokens in')")
    out = page.text_content("#output")
    assert out.startswith("KING:") and len(out) > 1000
    # The task boxes show only for the model kinds being served: all three here.
    assert page.is_visible("#classify-box") and page.is_visible("#translate-box") and page.is_visible("#tag-box")
    page.fill("#classify-box textarea", "a good film")
    page.click("#classify-box button")
    page.wait_for_function("document.querySelector('#classify-box pre').textContent.includes('positive')")
    page.close()


def test_playground_shows_errors(server, browser):
    page = _page(browser)
    page.goto(server.url + "/")
    page.wait_for_selector("#gen-model option[value='tiny']", state="attached")
    page.fill("#temperature", "7")
    page.click("#go")
    page.wait_for_function("document.getElementById('gen-status').classList.contains('error')")
    assert "temperature" in page.text_content("#gen-status")
    page.close()
