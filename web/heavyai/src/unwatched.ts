/**
 * Nobody watching: the kiosk page rests like a browser tab in the background.
 *
 * keepalive's kiosk is always on screen (a display of its own), so JupyterLab's polls (the
 * running kernels, sessions and terminals, the file browser, the workspaces: each every ten
 * seconds) never stand by, although nobody may look at the page for days. The service calls
 * `window.keepaliveWatched(false)` when the last viewer or DevTools client leaves (and after
 * each load of the page), `true` when one comes. Unwatched, the page says it is hidden, and
 * every poll made with Lumino's default `when-hidden` standby rests until someone watches;
 * coming back, each poll looks at once.
 *
 * Outputs still arrive: they come over the kernels' websockets, which standby leaves alone,
 * and what the page itself asks for (opening a notebook, saving it) is still done.
 */

/** What the page was told, the latest last (at most LOG_LENGTH): for a look over DevTools. */
const told: boolean[] = [];
const LOG_LENGTH = 20;
let hidden = false;

function setHidden(hide: boolean): void {
  if (hide) {
    // Own properties of the document shadow the prototype's getters; deleting them restores those.
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
  } else {
    delete (document as any).hidden;
    delete (document as any).visibilityState;
  }
  hidden = hide;
  document.dispatchEvent(new Event('visibilitychange'));
}

export function startResting(): void {
  (window as any).keepaliveWatchedLog = told;
  (window as any).keepaliveWatched = (watched: boolean): void => {
    told.push(watched);
    told.splice(0, told.length - LOG_LENGTH);
    if (hidden === watched) {
      setHidden(!watched);
    }
  };
}
