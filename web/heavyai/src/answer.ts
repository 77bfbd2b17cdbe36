/**
 * Answering a cell's pending input box from outside (`POST /sessions/{id}/input`): the service
 * calls `window.keepaliveAnswerInput(kernelId, value)`, which puts the value into the box that
 * JupyterLab shows for that kernel's `input()` or `getpass()` and presses Enter in it. The page
 * then sends the answer and shows the answered line exactly as if the user had typed it (a
 * password as dots). Returns false when no open notebook of that kernel shows a box: the
 * service then sends the answer to the kernel itself.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';

import { notebookPanels } from './reattach';

export function exposeAnswering(app: JupyterFrontEnd): void {
  (window as any).keepaliveAnswerInput = (kernelId: string, value: string): boolean => {
    for (const panel of notebookPanels(app)) {
      if (panel.sessionContext?.session?.kernel?.id !== kernelId) {
        continue;
      }
      const box = panel.node.querySelector('.jp-Stdin-input') as HTMLInputElement | null;
      if (!box) {
        continue;
      }
      box.value = value;
      box.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
      return true;
    }
    return false;
  };
}
