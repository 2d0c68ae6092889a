"""The playground page in real headless Chromium (Debian's chromium + chromium-driver)."""
import os
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

os.environ.setdefault("SE_OFFLINE", "true")


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    yield d
    d.quit()


def open_page(browser, node, prompt="The sea was calm in the morning, and"):
    # The sign-in link the run command prints: the key rides in the fragment and becomes a cookie.
    browser.get("about:blank")
    browser.get(node.url + "/#key=" + node.key)
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "conn").text == "connected")
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, ".panel select[name=model] option"))
    if prompt:  # the box starts empty: type what a person would
        browser.find_element(By.ID, "prompt").send_keys(prompt)


def set_field(panel, name, value):
    el = panel.find_element(By.NAME, name)
    el.clear()
    el.send_keys(str(value))


def type_prompt(browser, text):
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys(text)
    return prompt


def outputs(browser):
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".panel:not([hidden]) .output")]


def test_stream_grows_and_stop_ends_it(browser, slow_node):
    open_page(browser, slow_node)
    type_prompt(browser, "The orchestra tuned their instruments")
    panel = browser.find_element(By.CSS_SELECTOR, ".panel")
    set_field(panel, "max_tokens", 400)
    set_field(panel, "temperature", 0.9)
    set_field(panel, "seed", 2)  # a seed whose answer is long (242 tokens): it cannot end before Stop
    browser.find_element(By.ID, "submit").click()
    # The output grows across at least three observations.
    seen = []
    deadline = time.time() + 10
    while len(seen) < 3 and time.time() < deadline:
        text = outputs(browser)[0]
        if text and (not seen or len(text) > len(seen[-1])):
            seen.append(text)
        time.sleep(0.15)
    assert len(seen) >= 3, seen
    assert all(b.startswith(a) for a, b in zip(seen, seen[1:]))
    assert browser.find_element(By.CSS_SELECTOR, ".ttft").text.startswith("TTFT ")
    # Esc stops it; the text stops growing and the finish reason says so.
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    WebDriverWait(browser, 5).until(lambda d: "cancelled" in d.find_element(By.CSS_SELECTOR, ".finish").text)
    stopped = outputs(browser)[0]
    time.sleep(0.5)
    assert outputs(browser)[0] == stopped
    assert browser.find_element(By.ID, "stop").get_attribute("disabled") is not None


def test_ctrl_enter_submits_and_runs_to_the_end(browser, node):
    open_page(browser, node, prompt=None)
    panel = browser.find_element(By.CSS_SELECTOR, ".panel")
    set_field(panel, "max_tokens", 10)
    prompt = browser.find_element(By.ID, "prompt")
    # The box starts empty, its example shown as a placeholder that typing does not append to.
    assert prompt.get_attribute("value") == "" and "The sea was calm" in prompt.get_attribute("placeholder")
    prompt.send_keys(Keys.CONTROL, Keys.ENTER)
    WebDriverWait(browser, 5).until(lambda d: "write a prompt first" in d.find_element(By.CSS_SELECTOR, ".error").text)
    prompt.send_keys("The orchestra")
    assert prompt.get_attribute("value") == "The orchestra"
    prompt.send_keys(Keys.CONTROL, Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda d: "finish:" in d.find_element(By.CSS_SELECTOR, ".finish").text)
    assert browser.find_element(By.CSS_SELECTOR, ".finish").text in ("finish: length", "finish: stop")
    assert outputs(browser)[0].strip()
    assert "tok/s" in browser.find_element(By.CSS_SELECTOR, ".tps").text


def test_invalid_parameter_shows_its_error(browser, node):
    open_page(browser, node)
    panel = browser.find_element(By.CSS_SELECTOR, ".panel")
    set_field(panel, "temperature", 5)
    browser.find_element(By.ID, "submit").click()
    err = WebDriverWait(browser, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, ".panel .error:not([hidden])"))
    assert "temperature" in err.text and "between 0 and 2" in err.text
    field = panel.find_element(By.NAME, "temperature").find_element(By.XPATH, "./ancestor::label")
    assert "invalid" in field.get_attribute("class")
    set_field(panel, "temperature", 0.7)
    assert "invalid" not in field.get_attribute("class")


def test_stop_sequence_chip_is_sent(browser, node):
    open_page(browser, node)
    panel = browser.find_element(By.CSS_SELECTOR, ".panel")
    set_field(panel, "temperature", 0)
    set_field(panel, "max_tokens", 200)
    stop = panel.find_element(By.NAME, "stop-input")
    stop.send_keys(".", Keys.ENTER)
    assert len(panel.find_elements(By.CSS_SELECTOR, ".chip")) == 1
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 10).until(lambda d: "finish:" in d.find_element(By.CSS_SELECTOR, ".finish").text)
    assert browser.find_element(By.CSS_SELECTOR, ".finish").text == "finish: stop"
    assert "." not in outputs(browser)[0]


def test_compare_mode_streams_two_columns(browser, slow_node):
    open_page(browser, slow_node)
    browser.find_element(By.ID, "compare-toggle").click()
    panels = browser.find_elements(By.CSS_SELECTOR, ".panel:not([hidden])")
    assert len(panels) == 2
    temps = [p.find_element(By.NAME, "temperature").get_attribute("value") for p in panels]
    assert temps[0] != temps[1], "the two columns start with different parameters"
    for p in panels:
        set_field(p, "max_tokens", 60)
        set_field(p, "seed", 2)
    browser.find_element(By.ID, "submit").click()
    # Both columns grow while the other is still running: they stream at the same time.
    WebDriverWait(browser, 10).until(lambda d: all(len(t) > 0 for t in outputs(d)))
    mid = outputs(browser)
    assert browser.find_element(By.ID, "stop").get_attribute("disabled") is None, "still streaming"
    WebDriverWait(browser, 20).until(lambda d: all("finish:" in e.text for e in d.find_elements(By.CSS_SELECTOR, ".panel .finish")))
    end = outputs(browser)
    assert all(len(e) >= len(m) for e, m in zip(end, mid))
    assert end[0] != end[1]


def test_reconnects_and_reports_an_interrupted_generation(browser, make_node):
    # Slow tokens, so the generation is surely still running when the node dies.
    n = make_node("--model-ttft-ms", "50", "--model-token-ms", "400", "--model-jitter", "0")
    open_page(browser, n)
    panel = browser.find_element(By.CSS_SELECTOR, ".panel")
    set_field(panel, "max_tokens", 500)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 10).until(lambda d: len(outputs(d)[0]) > 0)
    assert browser.find_element(By.ID, "stop").get_attribute("disabled") is None, "still generating"
    n.proc.kill()
    n.proc.wait()
    err = WebDriverWait(browser, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, ".panel .error:not([hidden])"))
    assert "interrupted" in err.text
    WebDriverWait(browser, 10).until(lambda d: "disconnected" in d.find_element(By.ID, "conn").text)


def test_sign_in_link_sets_an_httponly_cookie_and_clears_the_fragment(browser, node):
    browser.delete_all_cookies()
    open_page(browser, node)
    assert "#key=" not in browser.current_url
    cookie = browser.get_cookie("pg_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == "", "HttpOnly: invisible to scripts"
    browser.find_element(By.ID, "signout").click()
    WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "signin").is_displayed())
    assert browser.get_cookie("pg_session") is None
    # A bad key shows an error and stays on the sign-in form.
    browser.find_element(By.ID, "signin-key").send_keys("pgk_this_is_not_a_valid_key_at_all", Keys.ENTER)
    WebDriverWait(browser, 5).until(lambda d: "not valid" in d.find_element(By.ID, "signin-error").text)


def test_presets_save_search_load_run_delete(browser, node):
    import uuid
    open_page(browser, node)
    suffix = uuid.uuid4().hex[:6]
    name = f"Summarize for a 2nd grader {suffix}"
    prompt = type_prompt(browser, "Explain this simply: {{input}}")
    panel = browser.find_element(By.CSS_SELECTOR, ".panel")
    set_field(panel, "temperature", 0)
    set_field(panel, "max_tokens", 12)
    # Save.
    browser.find_element(By.ID, "save").click()
    browser.find_element(By.ID, "save-name").send_keys(name)
    browser.find_element(By.ID, "save-tags").send_keys("school, kids")
    browser.find_element(By.ID, "save-confirm").click()
    WebDriverWait(browser, 5).until(lambda d: "Saved" in d.find_element(By.ID, "notice").text)
    # Saving the same name again (other case) shows the conflict in the dialog.
    browser.find_element(By.ID, "save").click()
    field = browser.find_element(By.ID, "save-name")
    field.clear()
    field.send_keys(name.upper())
    browser.find_element(By.ID, "save-confirm").click()
    WebDriverWait(browser, 5).until(lambda d: "already have a preset" in d.find_element(By.ID, "save-error").text)
    browser.find_element(By.ID, "save-cancel").click()
    # Search with a misspelling, debounced as you type; keyboard selects and loads.
    prompt.clear()
    prompt.send_keys("something else")
    search = browser.find_element(By.ID, "preset-search")
    search.clear()
    search.send_keys("sumarize " + suffix)
    WebDriverWait(browser, 5).until(lambda d: any(name == e.text for e in d.find_elements(By.CSS_SELECTOR, ".preset-name")))
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".preset-name")]
    assert names[0] == name
    search.send_keys(Keys.ENTER)
    WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "prompt").get_attribute("value") == "Explain this simply: {{input}}")
    assert panel.find_element(By.NAME, "temperature").get_attribute("value") == "0"
    # Run it on new input.
    browser.find_element(By.ID, "input-context").send_keys("The moon has no air")
    browser.find_element(By.ID, "run-preset").click()
    WebDriverWait(browser, 10).until(lambda d: "finish:" in d.find_element(By.CSS_SELECTOR, ".finish").text)
    assert outputs(browser)[0].strip()
    # Delete with confirmation.
    items = browser.find_elements(By.CSS_SELECTOR, ".preset-item")
    item = [e for e in items if e.find_element(By.CSS_SELECTOR, ".preset-name").text == name][0]
    item.find_element(By.CSS_SELECTOR, ".delete").click()
    browser.switch_to.alert.accept()
    # The list is rendered again while this looks at it: an element read mid-render is stale, not an answer.
    WebDriverWait(browser, 5, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: not any(name == e.text for e in d.find_elements(By.CSS_SELECTOR, ".preset-name")))


def test_presets_during_a_database_outage_say_so(browser):
    """With PostgreSQL down the sidebar says its list comes from the cache and may be incomplete;
    a save says it will sync and the preset carries a "will sync" badge until it has; a save that
    could not be applied later (its name was taken) is shown until dismissed."""
    from test_preset_outage import Database, nodes
    db = Database()
    ns = []

    def save(name, prompt):
        type_prompt(browser, prompt)
        browser.find_element(By.ID, "save").click()
        field = browser.find_element(By.ID, "save-name")
        field.clear()
        field.send_keys(name)
        browser.find_element(By.ID, "save-confirm").click()

    def names(d):
        return [e.text for e in d.find_elements(By.CSS_SELECTOR, ".preset-name")]
    try:
        ns = nodes(db, 1)
        node = ns[0]
        open_page(browser, node, prompt=None)
        save("Saved before", "Before the outage: {{input}}")
        WebDriverWait(browser, 5).until(lambda d: "Saved" in d.find_element(By.ID, "notice").text)
        WebDriverWait(browser, 5, ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: names(d) == ["Saved before"])
        # Someone else's doing, straight into the database: a name the cache does not know is taken.
        db.sql("INSERT INTO presets (user_id, name, prompt) VALUES ('alice', 'Taken', 'p')")
        db.run("stop")
        save("Saved during", "During the outage")
        WebDriverWait(browser, 10).until(lambda d: "will sync" in d.find_element(By.ID, "notice").text)
        save("taken", "Mine")
        WebDriverWait(browser, 10).until(lambda d: "“taken” — will sync" in d.find_element(By.ID, "notice").text)
        WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: "may be incomplete" in d.find_element(By.ID, "preset-status").text)
        WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: names(d) == ["taken will sync", "Saved during will sync", "Saved before"])
        db.run("start")
        # Once the replayer is done, a new listing shows what was applied, plainly, and what was not.
        search = browser.find_element(By.ID, "preset-search")

        def synced(d):
            search.send_keys("s")
            search.send_keys(Keys.BACKSPACE)
            time.sleep(0.4)
            return (names(d) == ["Saved during", "Taken", "Saved before"] and d.find_element(By.ID, "preset-status").text == ""
                    and "could not be applied" in d.find_element(By.ID, "preset-failed").text)
        WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,)).until(synced)
        assert "Saving “taken”" in browser.find_element(By.ID, "preset-failed").text
        browser.find_element(By.CSS_SELECTOR, "#preset-failed .dismiss").click()
        WebDriverWait(browser, 5).until(lambda d: not d.find_element(By.ID, "preset-failed").is_displayed())
    finally:
        for n in ns:
            n.stop()
        db.destroy()


def test_presets_export_and_import_buttons(browser, node, tmp_path):
    import json
    import re
    import urllib.request
    import uuid
    open_page(browser, node, prompt=None)
    browser.find_element(By.ID, "preset-export").click()
    WebDriverWait(browser, 10).until(lambda d: "Exported" in d.find_element(By.ID, "notice").text)
    exported = int(re.search(r"Exported (\d+)", browser.find_element(By.ID, "notice").text).group(1))
    req = urllib.request.Request(node.url + "/v1/presets/export", headers={"Authorization": f"Bearer {node.key}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert exported == len(json.loads(r.read())["data"])
    suffix = uuid.uuid4().hex[:6]
    f = tmp_path / "presets.json"
    f.write_text(json.dumps({"object": "list", "data": [{"name": f"Imported {suffix}", "prompt": "Hello {{input}}", "tags": ["io"]},
                                                        {"prompt": "no name"}]}))
    browser.find_element(By.ID, "preset-import-file").send_keys(str(f))
    WebDriverWait(browser, 10).until(lambda d: "Imported 1 preset" in d.find_element(By.ID, "notice").text)
    assert "1 not imported (item 2" in browser.find_element(By.ID, "notice").text
    search = browser.find_element(By.ID, "preset-search")
    search.send_keys(suffix)
    WebDriverWait(browser, 10).until(lambda d: any(f"Imported {suffix}" in e.text for e in d.find_elements(By.CSS_SELECTOR, ".preset-name")))
    search.clear()


def test_a_loaded_preset_shows_a_field_per_variable_and_runs_with_them(browser, node):
    import json
    import urllib.request
    import uuid
    suffix = uuid.uuid4().hex[:6]
    body = {"name": f"Letter {suffix}", "prompt": "Write to {{recipient}} about {{subject}}: {{input}}", "parameters": {"max_tokens": 4}}
    req = urllib.request.Request(node.url + "/v1/presets", method="POST", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {node.key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
    open_page(browser, node, prompt=None)
    search = browser.find_element(By.ID, "preset-search")
    search.send_keys(suffix)
    WebDriverWait(browser, 10).until(lambda d: any(f"Letter {suffix}" in e.text for e in d.find_elements(By.CSS_SELECTOR, ".preset-name")))
    next(e for e in browser.find_elements(By.CSS_SELECTOR, ".preset-item") if f"Letter {suffix}" in e.text).click()
    fields = browser.find_elements(By.CSS_SELECTOR, "#preset-variables input[data-variable]")
    assert [f.get_attribute("name") for f in fields] == ["recipient", "subject"]
    fields[0].send_keys("the mayor")
    fields[1].send_keys("the harbour")
    browser.find_element(By.ID, "input-context").send_keys("please reply")
    browser.find_element(By.ID, "run-preset").click()
    # The run ends by its length (a missing variable would end it with an error naming it).
    WebDriverWait(browser, 10).until(lambda d: "length" in d.find_element(By.CSS_SELECTOR, ".panel .finish").text)
    assert outputs(browser)[0].strip()
    search.clear()
