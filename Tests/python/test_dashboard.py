"""The web dashboard (#17) driven in a real headless Chromium against a real farm (`cluster/farm.sh`,
as `make run` starts it): submit through the form, watch the log stream live and the status reach
ready, verify the result in the browser (valid), verify a tampered served result (invalid), cancel a
running build from its page. Screenshots go to KILN_SCREENSHOTS (default .build/dashboard-screenshots).
"""
import contextlib
import glob
import gzip
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("KILN_BIN_DIR", os.path.join(ROOT, ".build", "debug"))
SHOTS = os.environ.get("KILN_SCREENSHOTS", os.path.join(ROOT, ".build", "dashboard-screenshots"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def crate(directory, name, build_rs=None):
    os.makedirs(os.path.join(directory, name, "src"))
    with open(os.path.join(directory, name, "Cargo.toml"), "w") as f:
        f.write(f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n' + ('build = "build.rs"\n' if build_rs else ""))
    with open(os.path.join(directory, name, "src", "main.rs"), "w") as f:
        f.write('fn main() { println!("hello from the dashboard"); }\n')
    if build_rs:
        with open(os.path.join(directory, name, "build.rs"), "w") as f:
            f.write(build_rs)
    archive = os.path.join(directory, name + ".tar.gz")
    with tarfile.open(archive, "w:gz") as t:
        t.add(os.path.join(directory, name), arcname=name)
    return archive


@pytest.fixture(scope="module")
def farm():
    state = tempfile.mkdtemp(prefix="kiln-dashboard-")
    ports = [free_port() for _ in range(5)]
    env = dict(os.environ, BIN=BIN, KILN_STATE=state, KILN_POOL_IDLE="2", KILN_POOL_MAX="3")
    for name, port in zip(["KILN_BROKER_PORT", "KILN_BROKER_MONITOR_PORT", "KILN_GATEWAY_PORT", "KILN_POOL_MONITOR_PORT", "KILN_FETCH_MONITOR_PORT"], ports):
        env[name] = str(port)
    log = open(os.path.join(state, "farm.log"), "w")
    process = subprocess.Popen([os.path.join(ROOT, "cluster", "farm.sh")], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 90
        while "Kiln is running." not in open(os.path.join(state, "farm.log")).read():
            assert process.poll() is None and time.time() < deadline, open(os.path.join(state, "farm.log")).read()
            time.sleep(0.2)
        yield {"url": f"http://127.0.0.1:{ports[2]}", "state": state}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--no-proxy-server"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def wait(browser, seconds=180):
    # The page re-renders parts of itself as events arrive: an element found a moment ago can be gone.
    return WebDriverWait(browser, seconds, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))


def shot(browser, name):
    os.makedirs(SHOTS, exist_ok=True)
    browser.save_screenshot(os.path.join(SHOTS, name + ".png"))


def submit(browser, farm, archive):
    browser.get(farm["url"] + "/ui/#/submit")
    nonce = wait(browser, 30).until(EC.presence_of_element_located((By.ID, "nonce"))).get_attribute("value")
    assert re.fullmatch(r"[0-9a-f]{32}", nonce), nonce
    browser.find_element(By.ID, "source").send_keys(archive)
    browser.find_element(By.ID, "submit").click()
    wait(browser, 30).until(lambda b: "#/build/" in b.current_url)
    return browser.current_url.split("#/build/")[1], nonce


def status(browser):
    for _ in range(5):
        try:
            chips = browser.find_elements(By.CSS_SELECTOR, "main > p .status")
            return chips[0].get_attribute("data-status") if chips else None
        except StaleElementReferenceException:
            time.sleep(0.1)
    return None


def click(browser, element_id):
    """Clicks the element once it is there and enabled (found afresh: the page re-renders it)."""
    wait(browser, 60).until(lambda b: b.find_element(By.ID, element_id).is_enabled() and (b.find_element(By.ID, element_id).click() or True))


def test_a_build_submitted_through_the_form_streams_its_log_and_verifies(farm, browser, tmp_path):
    archive = crate(str(tmp_path), "dash", build_rs='fn main() { std::thread::sleep(std::time::Duration::from_secs(3)); }\n')
    job, nonce = submit(browser, farm, archive)
    # Log lines appear while the build is still running: live, not after the fact.
    wait(browser).until(lambda b: "Compiling" in b.find_element(By.ID, "log").text)
    seen_while_running = wait(browser, 30).until(lambda b: status(b))
    wait(browser).until(lambda b: status(b) == "ready")
    assert seen_while_running in ("building", "ready")
    phases = [li.get_attribute("data-phase") for li in browser.find_elements(By.CSS_SELECTOR, "#phases li")]
    assert phases[:4] == ["source", "detect", "fetch", "build"], phases
    assert all(re.search(r"\(\d+\.\d s\)", li.text) for li in browser.find_elements(By.CSS_SELECTOR, "#phases li")[:-1])
    produced = browser.find_element(By.ID, "produced").text
    assert "dash" in produced and re.search(r"[0-9a-f]{64}", produced), produced
    shot(browser, "build-ready")
    click(browser, "verify")
    verdict = wait(browser, 60).until(EC.presence_of_element_located((By.ID, "verdict")))
    assert verdict.get_attribute("data-ok") == "true", browser.find_element(By.ID, "verification").text
    text = browser.find_element(By.ID, "verification").text
    assert "artifacts/dash" in text and "nonce" in text and "kiln verify" in text  # what was not checked is said
    assert browser.find_element(By.ID, "download").get_attribute("href").endswith(f"/build/{job}/result")
    browser.execute_script("arguments[0].scrollIntoView()", verdict)
    shot(browser, "build-verified")
    # The list shows it, filterable by status, with the farm's counters.
    browser.get(farm["url"] + "/ui/#/?status=ready")
    wait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job}"]'))
    wait(browser, 30).until(lambda b: "idle workers" in b.find_element(By.ID, "workers-idle").text)
    wait(browser, 30).until(lambda b: "queued" in b.find_element(By.ID, "queue-depth").text)
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("error")
    wait(browser, 30).until(lambda b: not b.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job}"]'))
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("")
    wait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job}"]'))
    shot(browser, "builds-list")
    # Every control has a label a screen reader announces, and can be reached with the keyboard.
    unlabelled = browser.execute_script("""
        return Array.from(document.querySelectorAll('input, select, button, textarea')).filter((e) =>
            !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()).map((e) => e.outerHTML);""")
    assert unlabelled == [], unlabelled
    # A phone-sized screen: the page still fits (no horizontal scrolling).
    browser.set_window_size(390, 844)
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(browser, "builds-list-phone")
    browser.set_window_size(1280, 1000)

    # The same result, tampered with where the gateway keeps it: the browser says it is invalid.
    results = glob.glob(os.path.join(farm["state"], "**", "results", "*.tar.gz"), recursive=True)
    assert results
    for path in results:
        members = []
        with tarfile.open(path, "r:gz") as t:
            for member in t.getmembers():
                data = t.extractfile(member).read() if member.isfile() else None
                if member.name.startswith("artifacts/") and data:
                    data = data[:-1] + bytes([data[-1] ^ 1])
                members.append((member, data))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as t:
            for member, data in members:
                t.addfile(member, io.BytesIO(data) if data is not None else None)
        with open(path, "wb") as f:
            f.write(buffer.getvalue())
    browser.get(farm["url"] + f"/ui/#/build/{job}")
    click(browser, "verify")
    verdict = wait(browser, 60).until(EC.presence_of_element_located((By.ID, "verdict")))
    assert verdict.get_attribute("data-ok") == "false"
    assert "does not have the digest manifest.json lists" in verdict.text, verdict.text
    browser.execute_script("arguments[0].scrollIntoView()", verdict)
    shot(browser, "build-tampered")


def test_a_running_build_is_cancelled_from_its_page(farm, browser, tmp_path):
    archive = crate(str(tmp_path), "slow", build_rs='fn main() { std::thread::sleep(std::time::Duration::from_secs(120)); }\n')
    submit(browser, farm, archive)
    wait(browser).until(lambda b: "Compiling" in b.find_element(By.ID, "log").text)
    click(browser, "cancel")
    wait(browser, 60).until(lambda b: status(b) == "cancelled")
    assert "cancel" in browser.find_element(By.ID, "failure").text.lower()
    shot(browser, "build-cancelled")


def test_the_dashboard_files_are_cached_and_locked_down(farm):
    import urllib.request
    response = urllib.request.urlopen(farm["url"] + "/ui/dashboard.js")
    etag = response.headers["ETag"]
    assert response.headers["Cache-Control"] == "no-cache" and etag
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Content-Type"].startswith("text/javascript")
    request = urllib.request.Request(farm["url"] + "/ui/dashboard.js", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request)
    assert not_modified.value.code == 304


def test_the_list_updates_live_as_builds_appear_and_finish(farm, browser, tmp_path):
    import base64
    import json
    import urllib.request
    browser.get(farm["url"] + "/ui/#/")
    wait(browser, 30).until(EC.presence_of_element_located((By.ID, "workers-idle")))
    marker = browser.execute_script("const m = document.createElement('i'); m.id = 'still-the-same-page'; document.body.append(m); return true")
    archive = crate(str(tmp_path), "live")
    body = json.dumps({"nonce": "abcd", "source_data": base64.b64encode(open(archive, "rb").read()).decode(), "source_name": "live.tar.gz"})
    request = urllib.request.Request(farm["url"] + "/build", data=body.encode(), headers={"Content-Type": "application/json"})
    job = json.load(urllib.request.urlopen(request))["job_id"]
    # The row appears and turns ready through the feed, without the page reloading.
    row = f'tr[data-job="{job}"] .status'
    wait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, row))
    wait(browser).until(lambda b: b.find_element(By.CSS_SELECTOR, row).get_attribute("data-status") == "ready")
    assert marker and browser.find_elements(By.ID, "still-the-same-page")


@contextlib.contextmanager
def own_farm(gateway_arguments=()):
    """Broker, gateway and pool started one by one (not through farm.sh, which stops everything when
    one component dies), so that a test can kill the gateway and start it again, or give it tokens."""
    state = tempfile.mkdtemp(prefix="kiln-dashboard-own-")
    ports = {"broker": free_port(), "gateway": free_port()}
    processes = []

    def start(name, argv):
        log = open(os.path.join(state, name + ".log"), "a")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        processes.append(p)
        deadline = time.time() + 60
        while not re.search(r"listening on|started worker", open(os.path.join(state, name + ".log")).read()):
            assert p.poll() is None and time.time() < deadline, open(os.path.join(state, name + ".log")).read()
            time.sleep(0.1)
        return p

    subprocess.run([os.path.join(BIN, "kiln"), "keys", "generate", os.path.join(state, "farm.pem")], check=True, capture_output=True)
    shown = subprocess.run([os.path.join(BIN, "kiln"), "keys", "show", os.path.join(state, "farm.pem")], check=True, capture_output=True, text=True).stdout
    with open(os.path.join(state, "farm.pub"), "w") as f:
        f.write(re.search(r"^hex\s+(\S+)", shown, re.M).group(1))
    broker = f"kiln://127.0.0.1:{ports['broker']}"
    start("broker", [os.path.join(BIN, "kiln-broker"), "--port", str(ports["broker"]), "--monitor-port=-1"])
    gateway_argv = [os.path.join(BIN, "kiln-gateway"), "--port", str(ports["gateway"]), "--data", os.path.join(state, "gw"), "--broker", broker,
                    "--public-key", os.path.join(state, "farm.pub"), *gateway_arguments]
    farm = {"url": f"http://127.0.0.1:{ports['gateway']}", "state": state}
    farm["gateway"] = start("gateway", gateway_argv)
    farm["restart_gateway"] = lambda: start("gateway", gateway_argv)
    start("pool", [os.path.join(BIN, "kiln-pool"), "--broker", broker, "--idle", "1", "--max", "2", "--state", os.path.join(state, "pool"),
                   "--key", os.path.join(state, "farm.pem")])
    try:
        yield farm
    finally:
        for p in reversed(processes):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture()
def restartable_farm():
    with own_farm() as farm:
        yield farm


def test_the_log_resumes_after_the_gateway_restarts_without_repeating_a_line(restartable_farm, browser, tmp_path):
    # A chain of path dependencies, each with a build script that takes a second: "Compiling dN" lines
    # arrive one by one while the test kills the gateway and starts it again.
    root = tmp_path / "resume"
    deps = 6
    for n in range(1, deps + 1):
        (root / f"d{n}" / "src").mkdir(parents=True)
        dependency = f'd{n - 1} = {{ path = "../d{n - 1}" }}\n' if n > 1 else ""
        (root / f"d{n}" / "Cargo.toml").write_text(f'[package]\nname = "d{n}"\nversion = "0.1.0"\nedition = "2021"\nbuild = "build.rs"\n[dependencies]\n{dependency}')
        (root / f"d{n}" / "src" / "lib.rs").write_text("")
        (root / f"d{n}" / "build.rs").write_text("fn main() { std::thread::sleep(std::time::Duration::from_millis(1500)); }\n")
    (root / "src").mkdir()
    (root / "Cargo.toml").write_text(f'[package]\nname = "resume"\nversion = "0.1.0"\nedition = "2021"\n[dependencies]\nd{deps} = {{ path = "d{deps}" }}\n')
    (root / "src" / "main.rs").write_text('fn main() { println!("resumed"); }\n')
    archive = str(tmp_path / "resume.tar.gz")
    with tarfile.open(archive, "w:gz") as t:
        t.add(str(root), arcname="resume")
    job, _ = submit(browser, restartable_farm, archive)
    log = lambda b: b.find_element(By.ID, "log").text
    wait(browser).until(lambda b: "Compiling d2" in log(b))
    gateway = restartable_farm["gateway"]
    gateway.kill()
    gateway.wait()
    restartable_farm["restart_gateway"]()
    wait(browser).until(lambda b: status(b) == "ready")
    text = log(browser)
    for n in range(1, deps + 1):
        assert text.count(f"Compiling d{n} ") == 1, text
    assert text.count("Compiling resume ") == 1, text
    shot(browser, "build-resumed")


def test_a_failed_build_says_where_it_failed_and_what_to_do(farm, browser, tmp_path):
    root = tmp_path / "broken"
    (root / "src").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[package]\nname = "broken"\nversion = "0.1.0"\nedition = "2021"\n')
    (root / "src" / "main.rs").write_text('fn main() { let x: u32 = "not a number"; }\n')
    archive = str(tmp_path / "broken.tar.gz")
    with tarfile.open(archive, "w:gz") as t:
        t.add(str(root), arcname="broken")
    submit(browser, farm, archive)
    wait(browser).until(lambda b: status(b) == "error")
    problem = wait(browser, 30).until(lambda b: b.find_element(By.ID, "failure").text)
    assert "Failed in build" in problem and "Suggested:" in problem, problem
    assert "mismatched types" in browser.find_element(By.ID, "log").text
    shot(browser, "build-failed")


def test_with_a_token_the_page_streams_and_verifies_through_fetch(browser, tmp_path):
    # EventSource cannot send an Authorization header: with a token the page reads the streams with
    # fetch. Without the token the gateway refuses it; with it the whole flow works.
    with own_farm(["--token", "alice:user:alice-token"]) as farm:
        browser.get(farm["url"] + "/ui/#/")
        wait(browser, 30).until(lambda b: "401" in b.find_element(By.ID, "main").text)
        browser.find_element(By.ID, "token").send_keys("alice-token\n")
        browser.execute_script("document.getElementById('token').dispatchEvent(new Event('change'))")
        wait(browser, 30).until(lambda b: "idle workers" in b.find_element(By.ID, "workers-idle").text)
        archive = crate(str(tmp_path), "tokened", build_rs='fn main() { std::thread::sleep(std::time::Duration::from_secs(2)); }\n')
        job, _ = submit(browser, farm, archive)
        wait(browser).until(lambda b: "Compiling" in b.find_element(By.ID, "log").text)
        wait(browser).until(lambda b: status(b) == "ready")
        click(browser, "verify")
        verdict = wait(browser, 60).until(EC.presence_of_element_located((By.ID, "verdict")))
        assert verdict.get_attribute("data-ok") == "true", browser.find_element(By.ID, "verification").text
        browser.execute_script("sessionStorage.clear()")
