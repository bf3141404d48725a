// Creates (or updates) the ingestor's least-privilege roles and users from roles.json.
// Run once per cluster, as a user administrator, over TLS:
//   INGESTOR_DB=bot_core_db INGESTOR_PASSWORD=... INGESTOR_SCHEMA_PASSWORD=... \
//   INGESTOR_ROLES_FILE=deploy/mongodb/roles.json \
//   mongosh "mongodb://admin@mongodb-0.mongodb,mongodb-1.mongodb,mongodb-2.mongodb/?replicaSet=rs0&tls=true&authSource=admin" \
//     --file deploy/mongodb/setup.js
// Idempotent: an existing role's privileges and an existing user's roles are replaced.
const fs = require("fs");
const spec = JSON.parse(fs.readFileSync(process.env.INGESTOR_ROLES_FILE || "deploy/mongodb/roles.json", "utf8"));
const name = process.env.INGESTOR_DB || spec.database;
// The file names the default database; every resource and role binding moves to the chosen one.
const rebind = (doc) => JSON.parse(JSON.stringify(doc).split(JSON.stringify(spec.database)).join(JSON.stringify(name)));
const target = db.getSiblingDB(name);
for (const role of spec.roles.map(rebind)) {
  if (target.getRole(role.createRole)) {
    target.runCommand({ updateRole: role.createRole, privileges: role.privileges, roles: role.roles });
    print(`updated role ${name}.${role.createRole}`);
  } else {
    target.runCommand(role);
    print(`created role ${name}.${role.createRole}`);
  }
}
for (const user of spec.users.map(rebind)) {
  const pwd = process.env[user.passwordEnv];
  if (!pwd) throw new Error(`set ${user.passwordEnv} (the password of ${user.createUser})`);
  if (target.getUser(user.createUser)) {
    target.runCommand({ updateUser: user.createUser, pwd, roles: user.roles });
    print(`updated user ${name}.${user.createUser}`);
  } else {
    target.runCommand({ createUser: user.createUser, pwd, roles: user.roles });
    print(`created user ${name}.${user.createUser}`);
  }
}
