import { ClusterPage } from "./cluster";
import { NewEvaluationPage } from "./editor";
import { EvaluationsPage } from "./evaluations";
import { EvaluationMonitor } from "./monitor";
import { routeHref, useHashRoute, type Route } from "./routing";
import { SignInPage, useSession } from "./session";

function Page({ route }: { route: Route }) {
  switch (route.page) {
    case "new":
      return <NewEvaluationPage key={route.from ?? "new"} from={route.from} />;
    case "evaluations":
      return <EvaluationsPage />;
    case "evaluation":
      return <EvaluationMonitor key={route.id} id={route.id} />;
    case "cluster":
      return <ClusterPage />;
    case "not-found":
      return (
        <div className="page">
          <h1>Not found</h1>
          <p>
            Nothing lives at <code>{route.path}</code>. <a href={routeHref({ page: "new" })}>Write a new evaluation</a>.
          </p>
        </div>
      );
  }
}

function NavLink({ route, current, children }: { route: Route; current: boolean; children: string }) {
  return (
    <a href={routeHref(route)} aria-current={current ? "page" : undefined}>
      {children}
    </a>
  );
}

/** App is the shell: sign-in gate, navigation, and the page the URL names. */
export function App() {
  const { session, signOut } = useSession();
  const route = useHashRoute();
  if (session.status === "checking") {
    return (
      <main id="main" className="sign-in">
        <p className="muted">Checking your API key…</p>
      </main>
    );
  }
  if (session.status === "signed-out") return <SignInPage />;
  return (
    <>
      <a
        className="skip-link"
        href="#main"
        onClick={(event) => {
          event.preventDefault();
          document.getElementById("main")?.focus();
        }}
      >
        Skip to content
      </a>
      <header className="app-header">
        <a className="brand" href={routeHref({ page: "new" })}>
          evalmesh
        </a>
        <nav aria-label="Main">
          <NavLink route={{ page: "new" }} current={route.page === "new"}>
            New
          </NavLink>
          <NavLink
            route={{ page: "evaluations" }}
            current={route.page === "evaluations" || route.page === "evaluation"}
          >
            Evaluations
          </NavLink>
          {session.admin ? (
            <NavLink route={{ page: "cluster" }} current={route.page === "cluster"}>
              Cluster
            </NavLink>
          ) : null}
        </nav>
        <div className="header-end">
          <span className="muted">{session.admin ? "admin key" : "user key"}</span>
          <button type="button" className="secondary small" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Page route={route} />
      </main>
    </>
  );
}
