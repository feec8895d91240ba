// Key Vault (RBAC mode) for the app's secrets. The app reads them as Key Vault references with
// its identity (Key Vault Secrets User, rbac.bicep); a secret exists only when its parameter
// was given.
param name string
param location string
param tags object = {}
@secure()
param consumerApiKeys string = ''
@secure()
param redactSalt string = ''
@secure()
param databricksToken string = ''
@secure()
param databricksClientSecret string = ''

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:No virtual network here: the platform resolves Key Vault references over the public endpoint, with the app identity.
  // checkov:skip=CKV_AZURE_189:No virtual network here, so the public endpoint stays on; access is Entra ID and RBAC only.
  // checkov:skip=CKV_AZURE_110:Purge protection would keep `azd down --purge` from deleting the vault and block a new environment of the same name for days.
  // checkov:skip=CKV_AZURE_42:Soft delete is on (7 days); purge protection is off for the reason above.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource consumerKeys 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(consumerApiKeys)) {
  // checkov:skip=CKV_AZURE_41:An expired secret would lock every consumer out; keys rotate with `azd env set` and `azd provision`.
  // checkov:skip=CKV_AZURE_114:contentType is set; checkov does not look inside conditional (if) resources.
  parent: vault
  name: 'llmops-api-keys'
  properties: {
    value: consumerApiKeys
    contentType: 'text/plain; consumer=KEY pairs, comma-separated'
  }
}

resource salt 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(redactSalt)) {
  // checkov:skip=CKV_AZURE_41:An expired secret would lock every consumer out; keys rotate with `azd env set` and `azd provision`.
  // checkov:skip=CKV_AZURE_114:contentType is set; checkov does not look inside conditional (if) resources.
  parent: vault
  name: 'llmops-redact-salt'
  properties: {
    value: redactSalt
    contentType: 'text/plain'
  }
}

resource databricksPat 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(databricksToken)) {
  // checkov:skip=CKV_AZURE_41:The token's own lifetime is set in Databricks; rotate it with `azd env set` and `azd provision`.
  // checkov:skip=CKV_AZURE_114:contentType is set; checkov does not look inside conditional (if) resources.
  parent: vault
  name: 'databricks-token'
  properties: {
    value: databricksToken
    contentType: 'text/plain'
  }
}

resource databricksSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(databricksClientSecret)) {
  // checkov:skip=CKV_AZURE_41:The OAuth secret's own lifetime is set in Databricks; rotate it with `azd env set` and `azd provision`.
  // checkov:skip=CKV_AZURE_114:contentType is set; checkov does not look inside conditional (if) resources.
  parent: vault
  name: 'databricks-client-secret'
  properties: {
    value: databricksClientSecret
    contentType: 'text/plain'
  }
}

output name string = vault.name
// Versionless URIs: the app picks up a new secret version without a redeploy, once the
// platform refreshes its Key Vault references (within 24 hours, or at once on a restart).
output consumerKeysSecretUri string = !empty(consumerApiKeys) ? consumerKeys.properties.secretUri : ''
output redactSaltSecretUri string = !empty(redactSalt) ? salt.properties.secretUri : ''
output databricksTokenSecretUri string = !empty(databricksToken) ? databricksPat.properties.secretUri : ''
output databricksClientSecretUri string = !empty(databricksClientSecret) ? databricksSecret.properties.secretUri : ''
