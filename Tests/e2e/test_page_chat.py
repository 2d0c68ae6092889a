"""The page's chat mode, Compare with up to four columns, token counts, version history with diff
and restore, and the shortcut list — in real headless Chromium."""
import uuid

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import request
from test_page import browser, open_page, outputs, set_field  # noqa: F401 (browser is a fixture)


def turns(browser):
    return [(Select(li.find_element(By.CSS_SELECTOR, ".turn-role")).first_selected_option.get_attribute("value"),
             li.find_element(By.CSS_SELECTOR, ".turn-content").get_attribute("value"))
            for li in browser.find_elements(By.CSS_SELECTOR, "#turns .turn")]


def choose_chat(browser):
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=chat]").click()
    assert browser.find_element(By.ID, "chat-editor").is_displayed()
    assert not browser.find_element(By.ID, "prompt").is_displayed()


def find_and_load(browser, name):
    search = browser.find_element(By.ID, "preset-search")
    search.clear()
    search.send_keys(name)
    WebDriverWait(browser, 10).until(lambda d: any(e.text.startswith(name) for e in d.find_elements(By.CSS_SELECTOR, ".preset-name")))
    next(e for e in browser.find_elements(By.CSS_SELECTOR, ".preset-item") if e.text.startswith(name)).click()


def test_chat_turns_are_added_edited_reordered_deleted_sent_and_saved(browser, node):
    open_page(browser, node, prompt=None)
    choose_chat(browser)
    browser.find_element(By.ID, "system-prompt").send_keys("You are terse.")
    first = browser.find_element(By.CSS_SELECTOR, "#turns .turn .turn-content")
    first.send_keys("Hello there")
    add = browser.find_element(By.ID, "add-turn")
    add.click()
    browser.switch_to.active_element.send_keys("Hi! How can I help?")   # the new turn has the focus
    add.click()
    browser.switch_to.active_element.send_keys("Tell me about the sea")
    add.click()
    browser.switch_to.active_element.send_keys("a turn to delete")
    assert [r for r, _ in turns(browser)] == ["user", "assistant", "user", "assistant"], "a new turn answers the last one"
    items = browser.find_elements(By.CSS_SELECTOR, "#turns .turn")
    items[3].find_element(By.CSS_SELECTOR, ".turn-delete").click()
    # Edit: the second turn's text changes; reorder: the third moves up, then back down.
    second = browser.find_elements(By.CSS_SELECTOR, "#turns .turn-content")[1]
    second.clear()
    second.send_keys("Hi! Ask away.")
    browser.find_elements(By.CSS_SELECTOR, "#turns .turn")[2].find_element(By.CSS_SELECTOR, ".turn-up").click()
    assert [c for _, c in turns(browser)] == ["Hello there", "Tell me about the sea", "Hi! Ask away."]
    browser.find_elements(By.CSS_SELECTOR, "#turns .turn")[1].find_element(By.CSS_SELECTOR, ".turn-down").click()
    assert turns(browser) == [("user", "Hello there"), ("assistant", "Hi! Ask away."), ("user", "Tell me about the sea")]
    panel = browser.find_element(By.CSS_SELECTOR, ".panel")
    set_field(panel, "max_tokens", 7)
    set_field(panel, "seed", 3)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 10).until(lambda d: "length" in d.find_element(By.CSS_SELECTOR, ".panel .finish").text)
    assert outputs(browser)[0].strip()
    assert panel.find_element(By.CSS_SELECTOR, ".tokens").text == "7 tokens"
    # Saved as a chat preset: its mode and messages, in the page's order.
    name = "Chat " + uuid.uuid4().hex[:6]
    browser.find_element(By.ID, "save").click()
    browser.find_element(By.ID, "save-name").send_keys(name)
    browser.find_element(By.ID, "save-confirm").click()
    WebDriverWait(browser, 10).until(lambda d: f"Saved “{name}”" in d.find_element(By.ID, "notice").text)
    status, body = request(node, node.key, "GET", "/v1/presets?limit=5&query=" + name.replace(" ", "%20"))
    saved = next(p for p in body["data"] if p["name"] == name)
    assert saved["mode"] == "chat" and saved["prompt"] == ""
    assert saved["messages"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there"},
                                 {"role": "assistant", "content": "Hi! Ask away."}, {"role": "user", "content": "Tell me about the sea"}]
    assert saved["parameters"]["max_tokens"] == 7


def test_a_chat_preset_loads_its_turns_and_runs_with_its_variables(browser, node):
    name = "Tutor " + uuid.uuid4().hex[:6]
    status, p = request(node, node.key, "POST", "/v1/presets", {
        "name": name, "mode": "chat", "parameters": {"max_tokens": 5},
        "messages": [{"role": "system", "content": "You teach {{subject}} to {{audience}}."},
                     {"role": "user", "content": "Explain {{input}}"},
                     {"role": "system", "content": "Answer in one line."}]})
    assert status == 201, p
    assert p["variables"] == ["subject", "audience", "input"]
    open_page(browser, node, prompt=None)
    find_and_load(browser, name)
    assert browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=chat]").is_selected()
    assert browser.find_element(By.ID, "system-prompt").get_attribute("value") == "You teach {{subject}} to {{audience}}."
    assert turns(browser) == [("user", "Explain {{input}}"), ("system", "Answer in one line.")], "a later system message stays in place"
    fields = browser.find_elements(By.CSS_SELECTOR, "#preset-variables input[data-variable]")
    assert [f.get_attribute("name") for f in fields] == ["subject", "audience"]
    fields[0].send_keys("tides")
    fields[1].send_keys("children")
    browser.find_element(By.ID, "input-context").send_keys("the moon")
    browser.find_element(By.ID, "run-preset").click()
    WebDriverWait(browser, 10).until(lambda d: "length" in d.find_element(By.CSS_SELECTOR, ".panel .finish").text)
    assert browser.find_element(By.CSS_SELECTOR, ".panel .tokens").text == "5 tokens"
    # Back to completion mode when a completion preset is loaded.
    other = "Plain " + uuid.uuid4().hex[:6]
    assert request(node, node.key, "POST", "/v1/presets", {"name": other, "prompt": "Say {{input}}"})[0] == 201
    find_and_load(browser, other)
    assert browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=completion]").is_selected()
    assert browser.find_element(By.ID, "prompt").get_attribute("value") == "Say {{input}}"


def test_compare_runs_four_columns_with_their_own_parameters_and_counts(browser, node):
    open_page(browser, node)
    browser.find_element(By.ID, "compare-toggle").click()
    Select(browser.find_element(By.ID, "compare-count")).select_by_value("4")
    panels = browser.find_elements(By.CSS_SELECTOR, ".panel:not([hidden])")
    assert [p.find_element(By.CSS_SELECTOR, ".panel-title").text for p in panels] == ["A", "B", "C", "D"]
    temps = [p.find_element(By.NAME, "temperature").get_attribute("value") for p in panels]
    assert len(set(temps)) == 4, temps
    for i, p in enumerate(panels):
        set_field(p, "max_tokens", 3 + i)
        set_field(p, "seed", 11)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 20).until(lambda d: all("finish:" in e.text for e in d.find_elements(By.CSS_SELECTOR, ".panel:not([hidden]) .finish")))
    assert [p.find_element(By.CSS_SELECTOR, ".tokens").text for p in panels] == ["3 tokens", "4 tokens", "5 tokens", "6 tokens"]
    assert len(set(outputs(browser))) == 4, "four columns, four answers"
    # Back to three: the fourth is hidden and not run.
    Select(browser.find_element(By.ID, "compare-count")).select_by_value("3")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".panel:not([hidden])")) == 3
    browser.find_element(By.ID, "compare-toggle").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, ".panel:not([hidden])")) == 1
    assert not browser.find_element(By.ID, "compare-count").is_displayed()


def test_version_history_shows_a_diff_and_restores_a_version(browser, node):
    name = "Versioned " + uuid.uuid4().hex[:6]
    status, p = request(node, node.key, "POST", "/v1/presets", {"name": name, "prompt": "First line\nSecond line", "tags": ["a"]})
    assert status == 201
    assert request(node, node.key, "PATCH", f"/v1/presets/{p['id']}", {"prompt": "First line\nSecond line, changed"})[0] == 200
    assert request(node, node.key, "PATCH", f"/v1/presets/{p['id']}", {"tags": ["a", "b"]})[0] == 200
    open_page(browser, node, prompt=None)
    find_and_load(browser, name)
    browser.find_element(By.ID, "preset-history").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "history-dialog").get_attribute("open") is not None)
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#history-diff span"))
    options = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "diff-from")).options]
    assert options == ["3", "2", "1"], "newest first"

    def changes():
        return [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#history-diff .ins, #history-diff .del")]

    assert changes() == ["- tags: a", "+ tags: a, b"], "v2 → v3 changed the tags only"
    Select(browser.find_element(By.ID, "diff-from")).select_by_value("1")
    assert changes() == ["- tags: a", "+ tags: a, b", "- Second line", "+ Second line, changed"]
    restore = browser.find_element(By.ID, "restore-version")
    assert restore.text == "Restore v1"
    restore.click()
    WebDriverWait(browser, 10).until(lambda d: "Restored version 1" in d.find_element(By.ID, "notice").text)
    status, now = request(node, node.key, "GET", f"/v1/presets/{p['id']}")
    assert now["version"] == 4 and now["prompt"] == "First line\nSecond line" and now["tags"] == ["a"]
    # The history now lists the restore as the newest version, equal to v1.
    WebDriverWait(browser, 10).until(lambda d: Select(d.find_element(By.ID, "diff-to")).first_selected_option.get_attribute("value") == "4")
    Select(browser.find_element(By.ID, "diff-from")).select_by_value("1")
    assert changes() == [], "v4 is v1 again"
    browser.find_element(By.ID, "history-close").click()
    assert browser.find_element(By.ID, "prompt").get_attribute("value") == "First line\nSecond line"


def test_question_mark_lists_the_shortcuts_but_not_while_typing(browser, node):
    open_page(browser, node, prompt=None)
    prompt = browser.find_element(By.ID, "prompt")
    prompt.send_keys("Is it? ")
    assert browser.find_element(By.ID, "shortcuts-dialog").get_attribute("open") is None, "typing ? in the prompt is text"
    assert prompt.get_attribute("value") == "Is it? "
    browser.find_element(By.TAG_NAME, "h1").click()
    browser.switch_to.active_element.send_keys("?")
    WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "shortcuts-dialog").get_attribute("open") is not None)
    rows = browser.find_elements(By.CSS_SELECTOR, "#shortcuts-dialog tr")
    assert len(rows) >= 5 and any("Stop" in r.text for r in rows)
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "shortcuts-dialog").get_attribute("open") is None)
    browser.find_element(By.TAG_NAME, "h1").click()
    browser.switch_to.active_element.send_keys("/")
    assert browser.switch_to.active_element.get_attribute("id") == "preset-search"
