"""The portal in a real browser (Debian's chromium, driven by selenium), started by the Rust test
`portal_in_a_real_browser` (tests/e2e/controller/portal.rs), which sets up the cluster side.

A signs in, finds the route in the catalog, requests access for her consumer, sees it Pending, tries
to approve it herself and sees the API server's denial; B approves it from his inbox. With
PHASE=usage (run after the test made calls with A's key): A opens her usage page and waits until its
chart and table show the EXPECT_REQUESTS calls of today. Screenshots go to $SCREENSHOTS; every request
the browser made is checked to have gone to the portal's own host. Prints one JSON line with what it
saw; exits non-zero on the first failed expectation.
"""

import json
import os
import sys
import time
from urllib.parse import urlparse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PORTAL = os.environ["PORTAL_URL"]
NS = os.environ["NS"]
SHOTS = os.environ["SCREENSHOTS"]
SUBSCRIPTION = f"app-{NS}-chat"


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.implicitly_wait(5)
    return driver


def follow(driver, element):
    """Clicks `element` and waits until the page it leads to has replaced this one (reading the page
    straight after a click may read the old one, whose elements then go stale)."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 20).until(lambda _: gone(old))


def gone(element):
    """Whether `element` has left the document. Selenium's own `staleness_of` lets through the error
    chromium gives when the page is swapped in the middle of the check ("Node with given id does not
    belong to the document"), which is the same answer: the old page is gone."""
    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True
    except WebDriverException as error:
        if "does not belong to the document" in str(error) or "No node with given id" in str(error):
            return True
        raise


def expect(condition, what, driver):
    if not condition:
        raise AssertionError(f"{what}; page {driver.current_url}:\n{driver.page_source[:4000]}")


def shot(driver, name):
    driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def sign_in(driver, token):
    driver.get(PORTAL + "/")
    expect(driver.current_url.endswith("/signin"), "an anonymous visit lands on sign-in", driver)
    driver.find_element(By.ID, "token").send_keys(token)
    follow(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/signin'] button"))
    expect(driver.find_elements(By.CSS_SELECTOR, "h1") and "catalog" in driver.find_element(By.TAG_NAME, "h1").text.lower(),
           "signed in, the catalog shows", driver)


def hosts(driver):
    """Every host the browser sent a request to, from the performance (network) log."""
    seen = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            parsed = urlparse(url)
            if parsed.scheme in ("http", "https"):
                seen.add(parsed.netloc)
            elif parsed.scheme not in ("data", "about", "blob"):
                seen.add(url)
    return seen


def usage():
    """A's usage page shows the calls made with her key: today's bar and the row beside it."""
    seen = {}
    expected = os.environ["EXPECT_REQUESTS"]
    a = browser()
    try:
        sign_in(a, os.environ["TOKEN_A"])
        follow(a, a.find_element(By.CSS_SELECTOR, "nav a[href='/usage']"))
        follow(a, a.find_element(By.CSS_SELECTOR, f"a[href='/usage/subscriptions/{NS}/{SUBSCRIPTION}']"))
        # The roll-up: the proxy reports and the controller writes every second here.
        deadline = time.time() + 30
        while True:
            row = a.find_elements(By.CSS_SELECTOR, "table.usage-numbers tbody tr")[0]
            cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            if cells[1] == expected:
                break
            expect(time.time() < deadline, f"today's row shows {expected} requests (it shows {cells})", a)
            time.sleep(1)
            a.refresh()
        daily = a.find_elements(By.CSS_SELECTOR, "svg.chart-requests")[0]
        bars = daily.find_elements(By.CSS_SELECTOR, "rect.bar")
        expect(len(bars) == 31, "the daily chart has 31 bars", a)
        today = bars[-1].find_element(By.TAG_NAME, "title").get_attribute("textContent")
        expect(today == f"{cells[0]}: {expected}", f"today's bar is titled with its count ({today})", a)
        expect(float(bars[-1].get_attribute("height")) > 0, "today's bar is drawn", a)
        expect(len(a.find_elements(By.CSS_SELECTOR, "svg.chart")) == 6, "six charts: 3 per day, 3 per month", a)
        shot(a, "7-usage")
        seen["usage_row"] = cells
        seen["hosts_a"] = sorted(hosts(a))
    finally:
        a.quit()
    others = [h for h in seen["hosts_a"] if h != urlparse(PORTAL).netloc]
    if others:
        raise AssertionError(f"the browser sent requests to other hosts: {others}")
    print(json.dumps(seen))


def main():
    if os.environ.get("PHASE") == "usage":
        usage()
        return
    seen = {}
    portal_host = urlparse(PORTAL).netloc
    a = browser()
    try:
        sign_in(a, os.environ["TOKEN_A"])
        # Find the route in the catalog (filtering by team, through the form) and open its page.
        a.get(PORTAL + f"/?team={NS}")
        link = a.find_element(By.CSS_SELECTOR, f"a[href='/apis/{NS}/chat']")
        shot(a, "1-catalog")
        follow(a, link)
        expect("/v1/chat/completions" in a.page_source, "the API page lists its operations", a)
        shot(a, "2-api-page")
        a.find_element(By.ID, "reason").send_keys("Our support bot needs it")
        follow(a, a.find_element(By.CSS_SELECTOR, "form[action$='/subscribe'] button"))
        expect("Access requested" in a.page_source, "the request is accepted", a)
        # Pending, once the controller has written the status.
        deadline = time.time() + 30
        while True:
            a.get(PORTAL + "/subscriptions")
            if "Pending" in a.find_element(By.TAG_NAME, "main").text:
                break
            expect(time.time() < deadline, "the request shows Pending", a)
            time.sleep(0.5)
        shot(a, "3-pending")
        # A tries to approve her own request: the API server's denial, as it is.
        a.get(PORTAL + "/approvals")
        form = a.find_element(By.CSS_SELECTOR, f"form[action='/approvals/{NS}/{SUBSCRIPTION}']")
        follow(a, form.find_element(By.CSS_SELECTOR, "button[value='Approved']"))
        denial = a.find_element(By.CSS_SELECTOR, ".notice.error").text
        expect("may not set spec.decision" in denial, "A sees the API server's denial", a)
        seen["denial"] = denial
        shot(a, "4-self-approval-denied")
        seen["hosts_a"] = sorted(hosts(a))
    finally:
        a.quit()

    b = browser()
    try:
        sign_in(b, os.environ["TOKEN_B"])
        b.get(PORTAL + "/approvals")
        form = b.find_element(By.CSS_SELECTOR, f"form[action='/approvals/{NS}/{SUBSCRIPTION}']")
        form.find_element(By.TAG_NAME, "textarea").send_keys("welcome")
        shot(b, "5-inbox")
        follow(b, form.find_element(By.CSS_SELECTOR, "button[value='Approved']"))
        expect("Approved" in b.find_element(By.CSS_SELECTOR, ".notice.ok").text, "B's approval is accepted", b)
        shot(b, "6-approved")
        seen["hosts_b"] = sorted(hosts(b))
    finally:
        b.quit()

    for who in ("hosts_a", "hosts_b"):
        others = [h for h in seen[who] if h != portal_host]
        if others:
            raise AssertionError(f"the browser sent requests to other hosts: {others}")
    print(json.dumps(seen))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        sys.exit(1)
