// Drives Debian's chromium with playwright-core through the feedback widget on a
// page with a strict Content-Security-Policy. Run by
// tests/integration/test_intake_browser.py, which checks what reached GitLab.
//
//   node run.js PAGE_URL ARTIFACTS_DIR MIN_FILL_MS
//
// Prints one JSON object with what each step saw; exits non-zero on a failed check.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const [pageUrl, artifacts, minFillArg] = process.argv.slice(2);
const minFill = Number(minFillArg || '0');

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}

async function main() {
  fs.mkdirSync(artifacts, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'intake-chromium-'));
  // A fresh profile each run (playwright passes it as --user-data-dir).
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1024, height: 700 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const out = { steps: [], csp: [], pageErrors: [], widgetEncoding: null };
  try {
    const page = context.pages()[0] || await context.newPage();
    // How the widget came over the wire (the server gzips it for browsers).
    page.on('response', (r) => {
      if (new URL(r.url()).pathname === '/widget.js') out.widgetEncoding = r.headers()['content-encoding'] || 'identity';
    });
    page.on('console', (m) => {
      if (/Content.Security.Policy|Refused to/i.test(m.text())) out.csp.push(m.text());
    });
    await page.goto(pageUrl);
    const w = page.locator('#factory-feedback');
    const launch = w.locator('button.launch');
    await launch.waitFor({ state: 'visible', timeout: 15000 });

    // The host page's hostile CSS does not reach inside the shadow root.
    const bg = await launch.evaluate((el) => getComputedStyle(el).backgroundColor);
    check(bg !== 'rgb(0, 255, 0)', 'host page styles leaked into the widget: ' + bg);
    check(await launch.evaluate((el) => getComputedStyle(el).position) === 'fixed', 'the widget stylesheet applies');

    // Make the page fail so there are console errors to report.
    await page.click('#break');
    await page.waitForTimeout(100);
    await page.screenshot({ path: path.join(artifacts, 'intake-widget-page.png') });

    // 1. Validation errors are shown next to the fields, and focus goes there.
    await launch.click();
    const dialog = w.locator('[role=dialog]');
    await dialog.waitFor({ state: 'visible' });
    await w.locator('button[type=submit]').click();
    const titleErr = w.locator('[id$="-title-err"]');
    await titleErr.waitFor({ state: 'visible' });
    check((await titleErr.textContent()).includes('title'), 'title error text');
    check(await w.locator('input[name=title]').getAttribute('aria-invalid') === 'true', 'aria-invalid on title');
    check(await w.locator('input[name=title]').evaluate((el) => el.getRootNode().activeElement === el), 'focus on the first bad field');
    check(await w.locator('[role=alert]').isVisible(), 'summary visible');
    out.steps.push({ step: 'client validation', ok: true });

    // 2. A server-side refusal is shown too: sent faster than a person could.
    if (minFill > 0) {
      await w.locator('input[name=title]').fill('Too quick');
      await w.locator('textarea[name=description]').fill('Typed by a robot');
      await w.locator('button[type=submit]').click();
      await page.waitForFunction(() => {
        const r = document.querySelector('#factory-feedback').shadowRoot.querySelector('[role=alert]');
        return r && !r.hidden && /ms/.test(r.textContent);
      }, null, { timeout: 10000 });
      out.steps.push({ step: 'server validation', ok: true,
        message: await w.locator('[role=alert]').textContent() });
      await page.screenshot({ path: path.join(artifacts, 'intake-widget-errors.png') });
    }
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });

    // 3. Submit with the mouse.
    await launch.click();
    await dialog.waitFor({ state: 'visible' });
    await w.locator('select[name=kind]').selectOption('feature');
    await w.locator('input[name=title]').click();
    await w.locator('input[name=title]').fill('Mouse: add a dark mode');
    await w.locator('textarea[name=description]').click();
    await w.locator('textarea[name=description]').fill('Please add a dark mode.\n/close\n@all');
    await w.locator('input[name=email]').fill('mouse@example.com');
    await page.waitForTimeout(minFill + 200);
    await w.locator('button[type=submit]').click();
    const done = w.locator('.done');
    await done.waitFor({ state: 'visible', timeout: 15000 });
    const doneText = await done.textContent();
    check(/Thank you/.test(doneText), 'thank-you message');
    out.steps.push({ step: 'mouse', ok: true, id: (doneText.match(/fi-[0-9a-f]{24}/) || [])[0] });
    await page.screenshot({ path: path.join(artifacts, 'intake-widget-sent.png') });
    await w.locator('.done + .row button').click();
    await dialog.waitFor({ state: 'hidden' });

    // 4. Keyboard only: reach the button with Tab, fill the form, keep focus inside.
    await page.mouse.click(5, 690);
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    await page.keyboard.press('Tab'); // skip link
    let reached = false;
    for (let i = 0; i < 6 && !reached; i++) {
      await page.keyboard.press('Tab');
      reached = await launch.evaluate((el) => el.getRootNode().activeElement === el);
    }
    check(reached, 'the launcher is reachable with Tab');
    await page.keyboard.press('Enter');
    await dialog.waitFor({ state: 'visible' });
    const active = () => page.evaluate(() => {
      const a = document.querySelector('#factory-feedback').shadowRoot.activeElement;
      return a ? (a.name || a.className || a.tagName) : null;
    });
    check(await active() === 'kind', 'focus starts on the first field');
    await page.keyboard.press('ArrowDown'); // bug -> feature
    await page.keyboard.press('ArrowDown'); // feature -> support
    await page.keyboard.press('Tab');
    check(await active() === 'title', 'Tab to the title');
    await page.keyboard.type('Keyboard: cannot find the invoice');
    await page.keyboard.press('Tab');
    await page.keyboard.type('Where do I download my invoice?');
    await page.keyboard.press('Tab');
    await page.keyboard.type('keys@example.com');
    await page.keyboard.press('Tab');
    check(await active() === 'include_context', 'Tab to the technical details box');
    await page.keyboard.press('Space'); // opt out of technical details
    await page.keyboard.press('Tab');
    check(await active() === 'cancel', 'Tab to Cancel (the honeypot is skipped)');
    await page.keyboard.press('Tab');
    check(await active() === 'send', 'Tab to Send');
    await page.keyboard.press('Tab');
    check(await active() === 'kind', 'focus wraps to the first field (trap)');
    await page.keyboard.press('Shift+Tab');
    check(await active() === 'send', 'Shift+Tab wraps back to Send');
    await page.waitForTimeout(minFill + 200);
    await page.keyboard.press('Enter');
    await done.waitFor({ state: 'visible', timeout: 15000 });
    const doneKeys = await done.textContent();
    out.steps.push({ step: 'keyboard', ok: true, id: (doneKeys.match(/fi-[0-9a-f]{24}/) || [])[0] });
    check(await active() === 'send', 'focus on Close after sending');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    check(await launch.evaluate((el) => el.getRootNode().activeElement === el), 'focus returns to the launcher');

    check(out.csp.length === 0, 'no CSP violations: ' + out.csp.join(' | '));
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + '\n');
  process.exit(1);
});
