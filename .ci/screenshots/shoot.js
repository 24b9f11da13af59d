// Screenshots of the explorers in a real JupyterLab, headless Chromium (playwright-core).
// usage: node shoot.js <lab-url-with-token> <notebook> <outdir> <name1,name2,...> <wait-text>
// (wait-text: a text the notebook's last explorer shows once every cell has run)
const { chromium } = require('playwright-core');
(async () => {
  const [url, nb, outdir, names, waitText] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(900000);
  await page.goto(`${url.replace(/\/lab.*$/, '')}/lab/tree/${nb}?reset&${url.split('?')[1]}`);  // a fresh workspace: this notebook only
  await page.waitForSelector('.jp-Notebook', { timeout: 120000 });
  await page.waitForTimeout(8000);
  // a kernel-choice dialog (a notebook opened before) would block the menu: accept it
  const dialog = page.locator('.jp-Dialog .jp-mod-accept');
  if (await dialog.count()) await dialog.first().click();
  await page.click('.lm-MenuBar-itemLabel:text-is("Run")');
  await page.click('.lm-Menu-itemLabel:text-is("Run All Cells")');
  try {
    await page.waitForFunction(
      (t) => document.body.innerText.includes(t), waitText, { timeout: 900000 });
  } catch (e) {
    await page.screenshot({ path: `${outdir}/debug-${nb}.png` });
    throw e;
  }
  await page.waitForTimeout(4000);
  const boxes = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output > .widget-vbox');
  const n = await boxes.count();
  const wanted = names.split(',');
  console.log(`${n} explorer outputs`);
  for (let i = 0; i < Math.min(n, wanted.length); i++) {
    const box = boxes.nth(i);
    await box.scrollIntoViewIfNeeded();
    await page.waitForTimeout(1500);
    await box.screenshot({ path: `${outdir}/${wanted[i]}.png` });
    console.log(`wrote ${outdir}/${wanted[i]}.png`);
  }
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
