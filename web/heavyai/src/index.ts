/**
 * keepalive-heavyai: opening `lab?heavyai` (with or without `reset`) builds a workspace with a
 * notebook connected to HeavyDB using the session handed over to the server.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Notification, showErrorMessage } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { fetchSession, HeavyAISessionError, IHeavyAISession } from './api';
import { NOTEBOOK_PATH, notebookContent } from './notebook';
import { HeavyAIStatus } from './status';
import { startKeepingDrafts } from './drafts';
import { startReattaching } from './reattach';
import { startSteadySaving } from './steadysave';
import { startResting } from './unwatched';
import { exposeAnswering } from './answer';

const PLUGIN_ID = 'keepalive-heavyai:plugin';

/** The command that (re)builds the HeavyAI workspace; also in the command palette. */
export const OPEN_COMMAND = 'heavyai:open-session';

/** Whether the page was opened with the `heavyai` URL parameter (or the OmniSci-era `omnisci`). */
function requested(): boolean {
  const query = URLExt.queryStringToObject(window.location.search.replace(/^\?/, ''));
  return 'heavyai' in query || 'omnisci' in query;
}

/** The notebook as it is on disk, or undefined when there is none yet. */
async function readNotebook(app: JupyterFrontEnd): Promise<any> {
  try {
    return (await app.serviceManager.contents.get(NOTEBOOK_PATH, { content: true })).content;
  } catch {
    return undefined; // not there yet
  }
}

async function writeNotebook(
  app: JupyterFrontEnd,
  docManager: IDocumentManager,
  info: IHeavyAISession,
  existing: any
): Promise<void> {
  const contents = app.serviceManager.contents;
  await contents.save(NOTEBOOK_PATH, {
    type: 'notebook',
    format: 'json',
    content: notebookContent(info, existing)
  });
  // Already open (e.g. restored without `reset`): show what was just written.
  // Its context may still be loading the old file: wait for that, then load the new one.
  const open = docManager.findWidget(NOTEBOOK_PATH);
  const context = open ? docManager.contextForWidget(open) : undefined;
  if (context) {
    await context.ready;
    await context.revert();
  }
  docManager.openOrReveal(NOTEBOOK_PATH);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Builds a HeavyAI workspace from the session handed over to the server.',
  autoStart: true,
  requires: [IDocumentManager],
  optional: [IStatusBar, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    docManager: IDocumentManager,
    statusBar: IStatusBar | null,
    settings: ISettingRegistry | null
  ) => {
    const status = new HeavyAIStatus();
    let statusShown = false;
    const showStatus = () => {
      if (statusBar && !statusShown) {
        statusBar.registerStatusItem(PLUGIN_ID, { item: status, align: 'left', rank: 50 });
        statusShown = true;
      }
    };

    let running: Promise<void> | null = null;
    const openSession = async (): Promise<void> => {
      showStatus();
      // Read meanwhile: a round trip less before the workspace shows (a warm start waits for it).
      const existing = readNotebook(app);
      let info: IHeavyAISession;
      try {
        info = await fetchSession(app.serviceManager.serverSettings);
      } catch (error) {
        const message =
          error instanceof HeavyAISessionError ? error.message : `Unexpected error: ${String(error)}`;
        status.showError(message);
        // Toasts are cut short; "Details" shows the server's whole message (file, setting).
        Notification.error(`HeavyAI session: ${message}`, {
          autoClose: false,
          actions: [
            {
              label: 'Details',
              callback: () => void showErrorMessage('HeavyAI session', message)
            }
          ]
        });
        return;
      }
      status.showSession(info);
      const unset = (['protocol', 'host', 'port'] as const)
        .filter(key => info.environment[key] && info.connection[key] === null)
        .map(key => info.environment[key]);
      if (unset.length) {
        Notification.warning(
          `HeavyAI session: ${unset.join(', ')} not set in the server's environment.`,
          { autoClose: 10000 }
        );
      }
      try {
        await writeNotebook(app, docManager, info, await existing);
      } catch (error) {
        Notification.error(`HeavyAI session: could not write ${NOTEBOOK_PATH}: ${String(error)}`, {
          autoClose: false
        });
      }
    };

    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Open HeavyAI Session Notebook',
      execute: () => {
        // One build at a time: a second request while one runs joins it.
        if (!running) {
          running = openSession().finally(() => {
            running = null;
          });
        }
        return running;
      }
    });

    if (requested()) {
      void app.restored.then(() => app.commands.execute(OPEN_COMMAND));
    }
    exposeTakeOver(app, settings);
  }
};

/** What keepalive asks of a page it took from its warm pool (see exposeTakeOver). */
interface ITakeOver {
  /** Build the HeavyAI workspace, as `?heavyai` would have. */
  heavyai: boolean;
  /** Plugins whose user settings the new home holds: read them again. */
  settings: string[];
}

/**
 * A page of keepalive's warm pool loaded JupyterLab before anyone knew whose it would be.
 * When a user takes it, keepalive points the server's paths at the user's home and calls
 * `window.keepaliveTakeOver` over CDP: the page then shows that home (its files, its
 * settings, and the HeavyAI workspace when one was handed over) without a reload.
 */
function exposeTakeOver(app: JupyterFrontEnd, settings: ISettingRegistry | null): void {
  (window as any).keepaliveTakeOver = async (request: ITakeOver): Promise<void> => {
    await app.restored;
    const steps: Promise<unknown>[] = [];
    if (app.commands.hasCommand('filebrowser:refresh')) {
      steps.push(app.commands.execute('filebrowser:refresh'));
    }
    if (settings) {
      // A plugin that was never loaded reads the new home by itself when it loads.
      const loaded = request.settings.filter(id => id in settings.plugins);
      steps.push(...loaded.map(id => settings.reload(id)));
    }
    if (request.heavyai) {
      steps.push(app.commands.execute(OPEN_COMMAND));
    }
    await Promise.all(steps);
  };
}

/** Running cells keep their outputs across a reload or a browser crash (see reattach.ts). */
const reattachPlugin: JupyterFrontEndPlugin<void> = {
  id: 'keepalive-heavyai:reattach',
  description: 'Re-attaches executions that another page started to their cells.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => startReattaching(app)
};

/** The file on disk follows the screen within seconds (see steadysave.ts). */
const steadySavePlugin: JupyterFrontEndPlugin<void> = {
  id: 'keepalive-heavyai:steady-save',
  description: 'Saves dirty notebooks every autosave interval, however long saves take.',
  autoStart: true,
  requires: [IDocumentManager],
  activate: (app: JupyterFrontEnd, docManager: IDocumentManager) => startSteadySaving(app, docManager)
};

/** What is typed survives a browser crash between two saves (see drafts.ts). */
const draftsPlugin: JupyterFrontEndPlugin<void> = {
  id: 'keepalive-heavyai:drafts',
  description: 'Keeps unsaved cell sources on the server as they are typed, and puts them back.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => startKeepingDrafts(app)
};

/** A script's answer to a cell's input() goes through the kiosk's own input box (see answer.ts). */
const answerPlugin: JupyterFrontEndPlugin<void> = {
  id: 'keepalive-heavyai:answer',
  description: 'Answers a pending input box with what POST /sessions/{id}/input sends.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => exposeAnswering(app)
};

/** JupyterLab's polls rest while nobody watches the kiosk (see unwatched.ts). */
const restingPlugin: JupyterFrontEndPlugin<void> = {
  id: 'keepalive-heavyai:resting',
  description: 'Lets the page rest like a background tab while nobody watches it.',
  autoStart: true,
  activate: () => startResting()
};

export default [plugin, reattachPlugin, steadySavePlugin, draftsPlugin, restingPlugin, answerPlugin];
