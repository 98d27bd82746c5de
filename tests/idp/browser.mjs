// Headless Debian Chromium through playwright-core (never a downloaded
// browser), with fake camera and microphone.
import { chromium } from 'playwright-core';

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--no-sandbox',
    ],
  });
}

// From the gateway's /login through the provider's form and back.
export async function loginViaIdp(page, gatewayUrl, login) {
  await page.goto(`${gatewayUrl}/login`);
  await page.waitForSelector('#login');
  await page.fill('#login', login);
  await page.fill('#password', 'any-password');
  const origin = new URL(gatewayUrl).origin;
  await Promise.all([
    page.waitForURL(url => url.origin === origin, { timeout: 20000 }),
    page.click('#submit'),
  ]);
}

// From the gateway's /login through the built-in development provider's
// picker (`gateway --dev`) and back.
export async function loginViaDevIdp(page, gatewayUrl, person) {
  await page.goto(`${gatewayUrl}/login`);
  await page.waitForSelector(`button[data-person="${person}"]`);
  await Promise.all([
    page.waitForURL(url => !url.pathname.startsWith('/dev-idp/'), { timeout: 20000 }),
    page.click(`button[data-person="${person}"]`),
  ]);
}
