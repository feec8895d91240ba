# azd postdeploy hook (Windows): the same steps as postdeploy.sh. Subscribes the
# `retrain_request` blob trigger to the storage account's Event Grid system topic
# (infra/hooks/retrain-events.bicep) once the code is deployed and the host has created the
# `blobs_extension` key the webhook needs. Needs the Azure CLI, signed in (`az login`, or
# `azd config set auth.useAzCliAuth true`). Re-run alone with `azd hooks run postdeploy`.
$ErrorActionPreference = 'Stop'

foreach ($name in 'AZURE_SUBSCRIPTION_ID', 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'AZURE_EVENTGRID_SYSTEM_TOPIC_NAME') {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        Write-Error "postdeploy: $name is not set: run through azd (azd up, azd deploy or azd hooks run postdeploy) after azd provision."
    }
}
$subscription = $env:AZURE_SUBSCRIPTION_ID
$group = $env:AZURE_RESOURCE_GROUP
$app = $env:AZURE_FUNCTION_APP_NAME
$topic = $env:AZURE_EVENTGRID_SYSTEM_TOPIC_NAME
$container = if ($env:RETRAIN_REQUESTS_CONTAINER) { $env:RETRAIN_REQUESTS_CONTAINER } else { 'retrain-requests' }
$triggerName = 'retrain_request'
$attempts = if ($env:LLMOPS_HOOK_ATTEMPTS) { [int]$env:LLMOPS_HOOK_ATTEMPTS } else { 30 }  # x 10 s
$root = Resolve-Path (Join-Path $PSScriptRoot '../..')

if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Write-Error "postdeploy: the Azure CLI (az) is needed to subscribe $triggerName to Event Grid. Install it, sign in (az login), then run: azd hooks run postdeploy"
}

# The blob trigger arrives with the retraining trigger; until the code has it, there is
# nothing to subscribe.
$sources = @(Join-Path $root 'function_app.py') + @(Get-ChildItem -Path (Join-Path $root 'llmops') -Recurse -Filter '*.py' | ForEach-Object FullName)
if (-not (Select-String -Path $sources -SimpleMatch -Pattern "`"$triggerName`"" -Quiet)) {
    Write-Host "postdeploy: the code defines no $triggerName function: Event Grid subscription skipped."
    exit 0
}

# The host indexes the new code and creates the extension's key within a minute or two.
# The key is only tested for presence here; it is never printed.
for ($attempt = 1; ; $attempt++) {
    $key = az functionapp keys list --subscription $subscription -g $group -n $app --query systemKeys.blobs_extension -o tsv 2>$null
    if ($LASTEXITCODE -eq 0 -and $key) { break }
    if ($attempt -ge $attempts) {
        Write-Error ("postdeploy: $app has no blobs_extension key after $attempts tries. Check that $triggerName is listed in the portal (Functions), " +
            'call the app once (e.g. $GATEWAY_BASE_URL/health), then run: azd hooks run postdeploy')
    }
    Write-Host "postdeploy: waiting for the host's blob webhook key ($attempt/$attempts) ..."
    Start-Sleep -Seconds 10
}
Remove-Variable key

az deployment group create `
    --subscription $subscription `
    --resource-group $group `
    --name "retrain-events-$(Get-Date -Format yyyyMMddHHmmss)" `
    --template-file (Join-Path $PSScriptRoot 'retrain-events.bicep') `
    --parameters functionAppName=$app systemTopicName=$topic containerName=$container functionName=$triggerName `
    --output none
if ($LASTEXITCODE -ne 0) { Write-Error 'postdeploy: the Event Grid subscription deployment failed (see above).' }
Write-Host "postdeploy: BlobCreated events under $container/ now reach $triggerName."
