/**
 * Save open notebooks at a steady pace, so the file on disk is never far behind the screen.
 *
 * JupyterLab's own autosave stretches its interval to ten times the last save's duration: on a
 * busy machine a 1.5 s save means 15 s between saves, and whatever is on screen when the kiosk
 * browser dies is lost from the file. Here a dirty notebook is saved every `autosaveInterval`
 * seconds (the docmanager setting; the kiosk sets 2), one save at a time, whatever saves cost.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { IDocumentManager } from '@jupyterlab/docmanager';

import { notebookPanels } from './reattach';

export function startSteadySaving(app: JupyterFrontEnd, docManager: IDocumentManager): void {
  const saving = new WeakSet<object>();
  const tick = () => {
    if (docManager.autosave) {
      for (const panel of notebookPanels(app)) {
        const context = panel.context;
        if (!context.isReady || !context.model?.dirty || saving.has(context) || context.isDisposed) {
          continue;
        }
        saving.add(context);
        void context
          .save()
          .catch((error: unknown) => console.warn('keepalive: could not save', context.path, error))
          .finally(() => saving.delete(context));
      }
    }
    window.setTimeout(tick, Math.max(1, docManager.autosaveInterval) * 1000);
  };
  void app.restored.then(tick);
}
