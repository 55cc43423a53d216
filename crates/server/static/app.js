// Copy buttons: <button data-copy="ID"> copies the text of the element with that id.
// Everything else on the dashboard works without JavaScript.
// The buttons are hidden until this script runs: without it they could not work.
for (const b of document.querySelectorAll('button[data-copy]')) b.hidden = false;
document.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-copy]');
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  try {
    await navigator.clipboard.writeText(source.textContent.trim());
    button.textContent = 'Copied';
    button.setAttribute('aria-live', 'polite');
  } catch {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    button.textContent = 'Selected: press Ctrl+C';
  }
  setTimeout(() => { button.textContent = 'Copy'; }, 2000);
});
