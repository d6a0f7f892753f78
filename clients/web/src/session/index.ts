export { apiKeyStore, type SignOutReason } from "./api-key-store";
export { checkKey, type KeyCheck } from "./check-key";
export { useSession, type Session, type SessionApi } from "./session-context";
export { SessionProvider } from "./session-provider";
export { SignInPage } from "./sign-in-page";
