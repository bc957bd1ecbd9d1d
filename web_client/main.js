// Entry point of the applicant's page. With ?testhook=1 in the URL (and only then) the
// automated-test hook is loaded first; the session id and token are read from the
// fragment (#sid=…&token=…), never from the query.
import { App } from "./app.js";

let hook = null;
if (new URLSearchParams(location.search).get("testhook") === "1") {
  try {
    const mod = await import("./testhook.js");
    hook = mod.installTestHook();
  } catch (e) {
    console.warn("test hook unavailable", e);
  }
}

const app = new App();
if (hook) hook.attach(app);
app.init().catch((e) => console.error(e));
