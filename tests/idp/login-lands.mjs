// Signs in through the real provider in headless Chromium and reports
// where each person lands.
//
//   GATEWAY_URL=http://127.0.0.1:8080 LOGINS=teacher,pupil1 [DEV_IDP=1] [SCREENSHOT_DIR=dir] node login-lands.mjs
//
// With DEV_IDP=1 the logins are demo people picked on `gateway --dev`'s own provider page.
//
// Prints one JSON line per login: {login, url, page, text, structure (the
// page's skip link and live region problems), api_failures (the page's own
// API calls answered 400 or more)}. Exits non-zero
// on any failure, with the reason on stderr.
import { apiFailures, launch, loginViaDevIdp, loginViaIdp, pageStructure, screenshots } from './browser.mjs';

const gateway = process.env.GATEWAY_URL;
const logins = (process.env.LOGINS || '').split(',').filter(Boolean);
const shots = process.env.SCREENSHOT_DIR;

const browser = await launch();
try {
  for (const login of logins) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const failed = apiFailures(page);
    if (process.env.DEV_IDP) await loginViaDevIdp(page, gateway, login);
    else await loginViaIdp(page, gateway, login);
    await page.waitForSelector('body[data-page]');
    // Signed-in pages fill themselves from the API; wait for that.
    await page.waitForFunction(() => !document.querySelector('#app') || !document.querySelector('#app').textContent.includes('Loading'), null, { timeout: 10000 });
    const result = await page.evaluate(() => ({
      url: location.href,
      page: document.body.dataset.page ?? null,
      text: document.body.innerText.slice(0, 300),
    }));
    // Anything the page asks for after it filled itself.
    await new Promise(r => setTimeout(r, 500));
    const structure = await pageStructure(page);
    await screenshots(page, shots, `${process.env.DEV_IDP ? 'dev-' : ''}${login}`);
    console.log(JSON.stringify({ login, ...result, structure, api_failures: failed }));
    await context.close();
  }
} catch (err) {
  console.error(err && err.stack || String(err));
  process.exitCode = 1;
} finally {
  await browser.close();
}
