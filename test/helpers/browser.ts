import sparticuz from '@sparticuz/chromium';
import { type Browser, chromium } from 'playwright-core';

/**
 * Ordinary headless flags. The package's own `args` are tuned for AWS Lambda (single process,
 * SwiftShader) and crash the browser on a normal machine, so they are not used.
 */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
];

/**
 * Launches the Chromium that `npm ci` installs (`@sparticuz/chromium` ships the binary inside its
 * package and unpacks it on first use), so no system browser and no download is needed. A browser
 * that cannot start is an error that says why, never a skipped test.
 */
export async function launchBrowser(): Promise<Browser> {
  let executablePath: string;
  try {
    executablePath = await sparticuz.executablePath();
  } catch (error) {
    throw new Error(
      `could not unpack the Chromium from @sparticuz/chromium (is it installed by npm ci?): ${String(error)}`,
    );
  }
  try {
    return await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
  } catch (error) {
    throw new Error(
      `Chromium at ${executablePath} did not start: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
}
