// The ES module entry point: the same objects as the CommonJS one (index.js).
import cjs from './index.js'

export const { open, openAsync, Store, StatesafeError } = cjs
export default cjs
