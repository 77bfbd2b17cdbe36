/**
 * Save open notebooks at a steady pace, so the file on disk is never far behind the screen.
 *
 * JupyterLab's own autosave stretches its interval to ten times the last save's duration: on a
 * busy machine a 1.5 s save means 15 s between saves, and whatever is on screen when the kiosk
 * browser dies is lost from the file. Here a dirty notebook is saved every `autosaveInterval`
 * seconds (the docmanager setting; the kiosk sets 2), one save at a time, whatever saves cost.
 *
 * Saves of one document run one after the other, whoever asks (this, JupyterLab's own autosave,
 * the user's Ctrl+S): JupyterLab checks before each save that the file on disk is the one it
 * last saved, and two saves under way at once fail that check and open a "File Changed" dialog,
 * which a kiosk shows to nobody while it holds JupyterLab's own saving.
 *
 * The interval is read at each look, not when the next look is scheduled: the first look may
 * come before the settings are loaded, when the interval is still JupyterLab's default of 120 s.
 *
 * A change made while a save is under way is saved by the next one: JupyterLab takes the
 * notebook's content when a save starts and marks the notebook clean when it ends, so a change in
 * between (an output, a cell's count) was on screen but in no save until something else changed.
 * After a reload, a re-attached cell's last outputs and its count arrive together, often during
 * the save of the answer typed into its `input()` box (the file then lacked the cell's last line:
 * an intermittent failure of the input test, 2 runs in 10). A change is any change to the
 * notebook's shared document, not only what `contentChanged` tells: JupyterLab appends a stream's
 * text to the cell's last output as a "silent" change, which marks the notebook dirty but emits
 * no `contentChanged`; a line appended during a save was on screen and in no file (the burst
 * test's file one line short of its page, 1 run in 3 of the suite).
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { IDocumentManager } from '@jupyterlab/docmanager';

import { notebookPanels } from './reattach';

/** How often dirty notebooks are looked for, in ms. */
const LOOK_INTERVAL_MS = 250;

/**
 * Calls `onChange` after each change to the notebook's shared document (its cells, their outputs,
 * its metadata), silent ones too; its state (dirty, path) is not content. Returns how to stop.
 */
function watchContent(model: any, onChange: () => void): () => void {
  const ydoc = model?.sharedModel?.ydoc;
  const state = model?.sharedModel?.ystate;
  if (!ydoc) {
    return () => undefined;
  }
  const listener = (transaction: any) => {
    for (const changedType of transaction.changed.keys()) {
      if (changedType !== state) {
        onChange();
        return;
      }
    }
  };
  ydoc.on('afterTransaction', listener);
  return () => ydoc.off('afterTransaction', listener);
}

/** Makes the context's saves wait for each other, and a change made during a save leave the
 * notebook dirty (see above). */
function serializeSaves(context: any): void {
  const save = context.save.bind(context);
  const saveKeepingLaterChanges = async (): Promise<void> => {
    const model = context.model;
    let changed = false;
    const onChange = () => {
      changed = true;
    };
    model?.contentChanged.connect(onChange);
    const stopWatching = watchContent(model, onChange);
    try {
      await save();
    } finally {
      model?.contentChanged.disconnect(onChange);
      stopWatching();
      if (changed && !context.isDisposed && !model.isDisposed) {
        model.dirty = true; // not in the file yet
      }
    }
  };
  let queue: Promise<void> = Promise.resolve();
  context.save = (): Promise<void> => {
    const done = queue.then(saveKeepingLaterChanges);
    queue = done.catch(() => undefined);
    return done;
  };
}

export function startSteadySaving(app: JupyterFrontEnd, docManager: IDocumentManager): void {
  const saving = new WeakSet<object>();
  /** When each document's last save started (performance.now()). */
  const savedAt = new WeakMap<object, number>();
  const serialized = new WeakSet<object>();
  const tick = () => {
    for (const panel of notebookPanels(app)) {
      if (!serialized.has(panel.context)) {
        serialized.add(panel.context);
        serializeSaves(panel.context);
      }
    }
    if (docManager.autosave) {
      const now = performance.now();
      const interval = Math.max(1, docManager.autosaveInterval) * 1000;
      for (const panel of notebookPanels(app)) {
        const context = panel.context;
        if (!context.isReady || !context.model?.dirty || saving.has(context) || context.isDisposed) {
          continue;
        }
        if (now - (savedAt.get(context) ?? -Infinity) < interval) {
          continue;
        }
        savedAt.set(context, now);
        saving.add(context);
        void context
          .save()
          .catch((error: unknown) => console.warn('keepalive: could not save', context.path, error))
          .finally(() => saving.delete(context));
      }
    }
    window.setTimeout(tick, LOOK_INTERVAL_MS);
  };
  void app.restored.then(tick);
}
