"""The web UI in a real headless browser (Debian's chromium + chromium-driver,
driven by Debian's python3-selenium): every page renders the running agent's
data, lists update themselves through blocking queries, KV edits reach the
HTTP API (with check-and-set), catalog text is shown and never run, the ACL
token prompt, the cross-origin write check, `/` and `--no-ui`, and the
supervisor's jobs page on the telemetry port.

Runs under Debian's python3 (tests/python/run.sh); skipped where selenium is
not importable (the py-consul venv).
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from conftest import REPO, free_port, wait_http  # noqa: E402

if os.environ.get("CONSUL_HTTP_ADDR"):
    pytest.skip("the UI is pilotfish's own", allow_module_level=True)

XSS_SCRIPT = "<script>window.__xss=1</script>"
XSS_IMG = '<img src=x onerror="window.__xss=2">'
XSS_KEY = "<svg onload=window.__xss=3>"


def binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.environ.get("PILOTFISH_BIN", os.path.join(target, "debug", "pilotfish"))


def api(base, method, path, body=None, headers=None):
    data = body if isinstance(body, (bytes, type(None))) else (
        body.encode() if isinstance(body, str) else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


class Agent:
    """A `pilotfish agent --dev` of the test's own (extra flags)."""

    def __init__(self, *flags):
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.proc = subprocess.Popen(
            [binary(), "agent", "--dev", "--client", "127.0.0.1", "--node", "ui-node",
             "--http-port", str(self.port), "--dns-port", str(free_port()),
             "--server-port", str(free_port())] + list(flags),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_http(self.base)
        # A leader and this node in the catalog before any page is read.
        end = time.time() + 20
        while time.time() < end:
            s, body, _ = api(self.base, "GET", "/v1/status/leader")
            if s == 200 and json.loads(body):
                break
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def base(agent):
    host, port = agent
    return "http://%s:%d" % (host, port)


@pytest.fixture(scope="module")
def node(base):
    return json.loads(api(base, "GET", "/v1/agent/self")[1])["Config"]["NodeName"]


@pytest.fixture(scope="module")
def browser():
    if not shutil.which("chromedriver"):
        pytest.fail("chromedriver is missing: apt-get install chromium chromium-driver (tests/run.sh)")
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,900"):
        opts.add_argument(a)
    d = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    d.set_page_load_timeout(20)
    yield d
    d.quit()


def main_text(browser):
    # In one step: a live update may replace <main> or a list at any time.
    return browser.execute_script("return document.querySelector('main').innerText")


def wait_text(browser, text, timeout=5.0):
    WebDriverWait(browser, timeout, poll_frequency=0.05).until(lambda d: text in main_text(d))


def register(base, name, tags=(), meta=None, port=80, check=None, sid=None):
    body = {"Name": name, "ID": sid or name, "Tags": list(tags), "Port": port, "Meta": meta or {}}
    if check:
        body["Check"] = check
    s, b, _ = api(base, "PUT", "/v1/agent/service/register", body)
    assert s == 200, b


def no_injection(browser):
    """Nothing the catalog held ran or became an element."""
    assert browser.execute_script("return window.__xss === undefined")
    assert browser.execute_script(
        "return document.querySelectorAll('main script, main img').length") == 0


# ----------------------------------------------------------------- pages


def test_root_redirects_to_the_ui(base):
    req = urllib.request.Request(base + "/", method="GET")
    opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                                              {"redirect_request": lambda *a, **k: None}))
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(req, timeout=5)
    assert e.value.code == 301 and e.value.headers["Location"] == "/ui/"


def test_services_page_lists_names_tags_and_health(base, browser):
    register(base, "ui-web", tags=["blue", "v2"], sid="ui-web-1")
    register(base, "ui-web", tags=["green"], sid="ui-web-2",
             check={"CheckID": "ui-web-2-ttl", "TTL": "60s"})
    browser.get(base + "/ui/")
    assert browser.title.startswith("Services")
    row = browser.find_element(By.XPATH, "//tr[td/a[text()='ui-web']]")
    assert "blue" in row.text and "green" in row.text and "v2" in row.text
    # One instance without checks (passing), one with a critical TTL.
    assert "2: 1 passing, 1 critical" in row.text
    assert "critical" in row.find_element(By.CSS_SELECTOR, ".st").text
    # The favicon and the stylesheet are served by the agent itself.
    icon = browser.find_element(By.CSS_SELECTOR, "link[rel=icon]").get_attribute("href")
    s, b, h = api(base, "GET", "/ui/assets/favicon.svg")
    assert icon.endswith("/ui/assets/favicon.svg") and s == 200 and b.startswith(b"<svg")


def test_filter_box_hides_rows_and_works_without_javascript(base, browser):
    register(base, "ui-filter-a", tags=["alpha"])
    register(base, "ui-filter-b", tags=["beta"])
    browser.get(base + "/ui/services")
    box = browser.find_element(By.ID, "filter")
    box.send_keys("alph")
    rows = [r for r in browser.find_elements(By.CSS_SELECTOR, "tr[data-search]") if r.is_displayed()]
    assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == ["ui-filter-a"]
    # The same filter as a plain GET (the form without JavaScript).
    s, body, _ = api(base, "GET", "/ui/services?filter=beta")
    assert s == 200 and b"ui-filter-b" in body and b"ui-filter-a" not in body


def test_service_page_shows_instances_with_checks(base, node, browser):
    register(base, "ui-db", tags=["primary"], meta={"version": "14.2"}, port=5432,
             check={"CheckID": "ui-db-ttl", "TTL": "60s"})
    s, b, _ = api(base, "PUT", "/v1/agent/check/warn/ui-db-ttl?note=replication+lag+3s")
    assert s == 200, b
    browser.get(base + "/ui/services/ui-db")
    assert browser.title.startswith("Service ui-db")
    text = main_text(browser)
    for want in [node, ":5432", "primary", "version", "14.2", "warning", "replication lag 3s"]:
        assert want in text, (want, text)
    s, _, _ = api(base, "GET", "/ui/services/no-such-service")
    assert s == 404


def test_nodes_and_node_pages(base, node, browser):
    register(base, "ui-on-node")
    browser.get(base + "/ui/nodes")
    row = browser.find_element(By.XPATH, "//tr[td/a[text()='%s']]" % node)
    assert "127.0.0.1" in row.text and "ui-on-node" in row.text
    assert row.find_element(By.CSS_SELECTOR, ".st").text in ("passing", "warning", "critical")
    row.find_element(By.LINK_TEXT, node).click()
    wait_text(browser, "Serf Health Status")
    assert browser.title.startswith("Node " + node)
    assert "ui-on-node" in main_text(browser)


def test_sessions_page(base, browser):
    s, b, _ = api(base, "PUT", "/v1/session/create", {"Name": "ui-lock", "TTL": "30s"})
    assert s == 200, b
    sid = json.loads(b)["ID"]
    browser.get(base + "/ui/sessions")
    text = main_text(browser)
    assert sid in text and "ui-lock" in text and "30s" in text and "release" in text


def test_cluster_page(base, browser):
    browser.get(base + "/ui/cluster")
    text = main_text(browser)
    s, leader, _ = api(base, "GET", "/v1/status/leader")
    assert json.loads(leader) in text
    assert browser.find_element(By.CSS_SELECTOR, ".raft-state").text == "Leader"
    assert "leader" in text and "alive" in text and "server" in text


def test_agent_page(base, node, browser):
    browser.get(base + "/ui/agent")
    assert browser.find_element(By.CSS_SELECTOR, ".log-level").text == "info"
    text = main_text(browser)
    assert "pilotfish" in text and "NodeName" in text and node in text


# ----------------------------------------------------------------- live


def test_registration_appears_without_reload_within_a_second(base, browser):
    browser.get(base + "/ui/services")
    browser.execute_script("window.__same_page = true")
    time.sleep(0.3)  # the page's blocking query is parked
    register(base, "ui-live-arrival", tags=["fresh"])
    WebDriverWait(browser, 1.0, poll_frequency=0.02).until(
        lambda d: "ui-live-arrival" in main_text(d))
    assert browser.execute_script("return window.__same_page === true"), "the page was reloaded"


def test_unreachable_agent_is_shown(browser):
    a = Agent()
    try:
        browser.get(a.base + "/ui/services")
        assert not browser.find_element(By.ID, "offline").is_displayed()
        time.sleep(0.3)
    finally:
        a.stop()
    WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "offline").is_displayed())
    assert "unreachable" in browser.find_element(By.ID, "offline").text


# ----------------------------------------------------------------- KV


def kv_get(base, key):
    s, b, _ = api(base, "GET", "/v1/kv/%s?raw" % key)
    return b.decode() if s == 200 else None


def test_kv_browse_and_edit_is_visible_through_the_api(base, browser):
    api(base, "PUT", "/v1/kv/ui-kv/app/config", "old value")
    browser.get(base + "/ui/kv/")
    browser.find_element(By.LINK_TEXT, "ui-kv/").click()
    wait_text(browser, "app/")
    browser.find_element(By.LINK_TEXT, "app/").click()
    wait_text(browser, "config")
    browser.find_element(By.LINK_TEXT, "config").click()
    area = WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "kv-value"))
    assert area.get_attribute("value") == "old value"
    area.clear()
    area.send_keys("new value\nline two")
    browser.find_element(By.CSS_SELECTOR, "#kv-edit button[type=submit]").click()
    wait_text(browser, "Saved.")
    assert kv_get(base, "ui-kv/app/config") == "new value\nline two"
    # A second save works too: the page took the new ModifyIndex.
    area.send_keys("!")
    browser.find_element(By.CSS_SELECTOR, "#kv-edit button[type=submit]").click()
    WebDriverWait(browser, 5).until(lambda d: kv_get(base, "ui-kv/app/config").endswith("two!"))


def test_kv_concurrent_edit_is_refused(base, browser):
    api(base, "PUT", "/v1/kv/ui-kv/cas", "first")
    browser.get(base + "/ui/kv/ui-kv/cas")
    area = WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "kv-value"))
    api(base, "PUT", "/v1/kv/ui-kv/cas", "someone else")
    area.clear()
    area.send_keys("mine")
    browser.find_element(By.CSS_SELECTOR, "#kv-edit button[type=submit]").click()
    wait_text(browser, "someone else changed this key")
    assert kv_get(base, "ui-kv/cas") == "someone else"


def test_kv_create_and_delete_with_confirmation(base, browser):
    browser.get(base + "/ui/kv/ui-kv/")
    form = WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "kv-new"))
    form.find_element(By.ID, "new-key").send_keys("made/here")
    form.find_element(By.ID, "new-value").send_keys("created")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 5).until(lambda d: d.current_url.endswith("/ui/kv/ui-kv/made/here"))
    assert kv_get(base, "ui-kv/made/here") == "created"
    # Creating it again is refused (cas=0).
    browser.get(base + "/ui/kv/ui-kv/made/")
    form = WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "kv-new"))
    form.find_element(By.ID, "new-key").send_keys("here")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_text(browser, "already exists")
    # Delete: dismissing the confirmation keeps the key, accepting deletes it.
    browser.get(base + "/ui/kv/ui-kv/made/here")
    delete = WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "kv-delete"))
    delete.click()
    alert = WebDriverWait(browser, 5).until(lambda d: d.switch_to.alert)
    assert "ui-kv/made/here" in alert.text
    alert.dismiss()
    time.sleep(0.2)
    assert kv_get(base, "ui-kv/made/here") == "created"
    delete.click()
    WebDriverWait(browser, 5).until(lambda d: d.switch_to.alert).accept()
    WebDriverWait(browser, 5).until(lambda d: d.current_url.endswith("/ui/kv/ui-kv/made/"))
    assert kv_get(base, "ui-kv/made/here") is None


# ----------------------------------------------------------------- security


def test_catalog_text_is_shown_never_run(base, node, browser):
    register(base, XSS_SCRIPT, tags=[XSS_IMG], meta={"note": XSS_SCRIPT}, sid="xss-1",
             check={"CheckID": "xss-check", "TTL": "60s"})
    s, b, _ = api(base, "PUT", "/v1/agent/check/fail/xss-check?note=" +
                  urllib.request.quote(XSS_IMG))
    assert s == 200, b
    api(base, "PUT", "/v1/kv/ui-xss/" + urllib.request.quote(XSS_KEY, safe=""), XSS_SCRIPT)
    api(base, "PUT", "/v1/kv/ui-xss/img", XSS_IMG)

    browser.get(base + "/ui/services")
    text = main_text(browser)
    assert XSS_SCRIPT in text and XSS_IMG in text  # name and tag, as text
    no_injection(browser)
    browser.find_element(By.LINK_TEXT, XSS_SCRIPT).click()
    wait_text(browser, "Checks")
    text = main_text(browser)
    assert text.count(XSS_SCRIPT) >= 2 and XSS_IMG in text  # name, meta; tag, check output
    no_injection(browser)
    browser.get(base + "/ui/nodes/" + node)
    assert XSS_SCRIPT in main_text(browser)
    no_injection(browser)
    browser.get(base + "/ui/kv/ui-xss/")
    assert XSS_KEY in main_text(browser)
    no_injection(browser)
    for key, value in [("ui-xss/" + urllib.request.quote(XSS_KEY, safe=""), XSS_SCRIPT), ("ui-xss/img", XSS_IMG)]:
        browser.get(base + "/ui/kv/" + key)
        area = WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "kv-value"))
        assert area.get_attribute("value") == value
        no_injection(browser)


def test_cross_origin_writes_are_refused(base):
    s, b, _ = api(base, "PUT", "/v1/kv/ui-csrf", "x", {"Origin": "http://evil.example"})
    assert s == 403 and b"cross-origin" in b
    assert kv_get(base, "ui-csrf") is None
    host = base.split("://")[1]
    s, _, _ = api(base, "PUT", "/v1/kv/ui-csrf", "y", {"Origin": "http://" + host})
    assert s == 200 and kv_get(base, "ui-csrf") == "y"


def test_token_prompt_with_acls(browser):
    a = Agent("--acl-token", "s3cret-token")
    try:
        hdr = {"X-Consul-Token": "s3cret-token"}
        register_body = {"Name": "ui-private", "Port": 1}
        s, b, _ = api(a.base, "PUT", "/v1/agent/service/register", register_body, hdr)
        assert s == 200, b
        browser.get(a.base + "/ui/services")
        form = WebDriverWait(browser, 5).until(
            lambda d: d.find_element(By.ID, "token-form") if d.find_element(By.ID, "token-form").is_displayed() else None)
        assert "ui-private" not in browser.page_source
        # The prompt page answers 200 (an HTTP check on `/` stays passing);
        # the data needs the token.
        s, body, _ = api(a.base, "GET", "/ui/services")
        assert s == 200 and b"token-form" in body and b"ui-private" not in body
        assert api(a.base, "GET", "/v1/catalog/services")[0] == 403
        form.find_element(By.ID, "token").send_keys("wrong")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_text(browser, "That token was refused.")
        box = browser.find_element(By.ID, "token")
        box.clear()
        box.send_keys("s3cret-token" + Keys.ENTER)
        wait_text(browser, "ui-private")
        assert browser.execute_script(
            "return sessionStorage.getItem('pilotfish-ui-token')") == "s3cret-token"
        # Live updates carry the token.
        time.sleep(0.3)
        api(a.base, "PUT", "/v1/agent/service/register", {"Name": "ui-private-2"}, hdr)
        wait_text(browser, "ui-private-2", timeout=2)
        # Another page of the tab uses the kept token; a write needs it.
        api(a.base, "PUT", "/v1/kv/k", "v", hdr)
        browser.get(a.base + "/ui/kv/k")
        area = WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "kv-value"))
        area.clear()
        area.send_keys("from the ui")
        browser.find_element(By.CSS_SELECTOR, "#kv-edit button[type=submit]").click()
        wait_text(browser, "Saved.")
        assert api(a.base, "GET", "/v1/kv/k?raw", headers=hdr)[1] == b"from the ui"
        assert api(a.base, "PUT", "/v1/kv/k", "no token")[0] == 403
        # Forgetting the token brings the prompt back.
        browser.find_element(By.ID, "forget-token").click()
        WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "token-form").is_displayed())
    finally:
        browser.execute_script("sessionStorage.clear()")
        a.stop()


def test_no_ui_flag():
    a = Agent("--no-ui")
    try:
        s, b, _ = api(a.base, "GET", "/")
        assert s == 200 and b"UI disabled" in b
        assert api(a.base, "GET", "/ui/")[0] == 404
    finally:
        a.stop()


# ----------------------------------------------------------------- polish


def test_phone_width_and_keyboard(base, browser):
    browser.set_window_size(390, 844)
    try:
        for page in ["/ui/services", "/ui/services/ui-db", "/ui/nodes", "/ui/kv/", "/ui/cluster"]:
            browser.get(base + page)
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (page, overflow)
        # Tab reaches the skip link first, then the navigation.
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        assert browser.switch_to.active_element.text == "Skip to content"
    finally:
        browser.set_window_size(1280, 900)


# ----------------------------------------------------------------- jobs


def test_jobs_page_on_the_telemetry_port(browser):
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "pilotfish.toml")
        with open(cfg, "w") as f:
            f.write('[telemetry]\nport = %d\ninterfaces = "static:127.0.0.1"\n'
                    '[[jobs]]\nname = "ui-sleeper"\nexec = "sleep 1000"\n'
                    '[control]\nsocket = "%s/pf.sock"\n' % (port, d))
        proc = subprocess.Popen([binary(), "run", "--config", cfg],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = "http://127.0.0.1:%d" % port
            end = time.time() + 20
            while time.time() < end:
                try:
                    s, b, _ = api(base, "GET", "/status")
                    if s == 200 and json.loads(b)["jobs"][0].get("pid"):
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            pid = json.loads(api(base, "GET", "/status")[1])["jobs"][0]["pid"]
            browser.get(base + "/")
            assert browser.current_url.endswith("/ui/") and browser.title.startswith("Jobs")
            row = browser.find_element(By.XPATH, "//tr[td[text()='ui-sleeper']]")
            assert "running" in row.text and str(pid) in row.text
            # Read-only: no forms, no buttons but the hidden token one.
            assert not browser.find_elements(By.CSS_SELECTOR, "main form, main button")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# ----------------------------------------------------------------- cluster


def test_cluster_page_shows_a_failed_server_live(browser):
    """Three servers (tests/bench/ui.py starts them); one is killed while the
    page is open: it turns failed without a reload."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "pilotfish_bench_ui", os.path.join(REPO, "tests", "bench", "ui.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tmp = tempfile.mkdtemp()
    procs, base = bench.three_servers(binary(), tmp)
    try:
        browser.get(base + "/ui/cluster")
        text = main_text(browser)
        for n in ("node-1", "node-2", "node-3"):
            assert n in text
        assert "failed" not in text and text.count("alive") == 3
        assert browser.find_element(By.CSS_SELECTOR, ".raft-state").text in ("Leader", "Follower")
        browser.execute_script("window.__same_page = true")
        time.sleep(0.3)
        procs[2].kill()
        procs[2].wait()
        WebDriverWait(browser, 30, poll_frequency=0.1).until(
            lambda d: "failed" in main_text(d))
        assert browser.execute_script("return window.__same_page === true")
        rows = browser.find_elements(By.XPATH, "//tr[td/a[text()='node-3']]")
        assert "failed" in rows[-1].text  # the members table, after the servers
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
